//! `[telemetry]`: where traces go. `otlp_endpoint` (off by default) is an
//! OTLP/HTTP collector's base URL; spans are posted to its `/v1/traces`.

use serde::Deserialize;

use super::Validator;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    otlp_endpoint: Option<String>,
    #[serde(default = "default_service_name")]
    service_name: String,
}

impl Default for RawTelemetry {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: default_service_name(),
        }
    }
}

fn default_service_name() -> String {
    "tollgate".into()
}

/// Validated `[telemetry]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TelemetryConfig {
    /// The collector's traces URL (`…/v1/traces`); `None`: no traces.
    pub otlp_traces_url: Option<String>,
    /// `service.name` on every span.
    pub service_name: String,
}

impl Validator {
    pub(super) fn telemetry(&mut self, raw: &RawTelemetry) -> TelemetryConfig {
        let key = "telemetry.otlp_endpoint";
        let otlp_traces_url = raw.otlp_endpoint.as_deref().and_then(|text| {
            let Ok(mut url) = url::Url::parse(text) else {
                self.err(key, "must be a URL such as http://127.0.0.1:4318");
                return None;
            };
            if url.scheme() != "http" {
                self.err(
                    key,
                    "must be http:// (the exporter speaks plain OTLP/HTTP; run the collector beside the gateway)",
                );
                return None;
            }
            if url.host().is_none() || !url.username().is_empty() || url.password().is_some() {
                self.err(key, "must name a host, without credentials");
                return None;
            }
            // A base URL gets the traces path; a full one is kept.
            if url.path() == "/" || url.path().is_empty() {
                url.set_path("/v1/traces");
            }
            Some(url.to_string())
        });
        let name = &raw.service_name;
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            self.err(
                "telemetry.service_name",
                "must be 1 to 128 characters without control characters",
            );
        }
        TelemetryConfig {
            otlp_traces_url,
            service_name: name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(endpoint: Option<&str>) -> Result<TelemetryConfig, Vec<String>> {
        let mut v = Validator::default();
        let t = v.telemetry(&RawTelemetry {
            otlp_endpoint: endpoint.map(str::to_owned),
            service_name: "tollgate".into(),
        });
        if v.errors.is_empty() {
            Ok(t)
        } else {
            Err(v.errors)
        }
    }

    #[test]
    fn the_endpoint_is_a_plain_http_url_and_gets_the_traces_path() {
        assert_eq!(check(None).unwrap().otlp_traces_url, None);
        assert_eq!(
            check(Some("http://127.0.0.1:4318"))
                .unwrap()
                .otlp_traces_url
                .as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            check(Some("http://collector:4318/custom/path"))
                .unwrap()
                .otlp_traces_url
                .as_deref(),
            Some("http://collector:4318/custom/path")
        );
        for bad in [
            "not a url",
            "https://c:4318",
            "http://user:pw@c:4318",
            "grpc://c:4317",
        ] {
            let e = check(Some(bad)).unwrap_err();
            assert!(e[0].starts_with("telemetry.otlp_endpoint:"), "{bad}: {e:?}");
            assert!(!e[0].contains("pw"), "never echoes the URL");
        }
    }
}
