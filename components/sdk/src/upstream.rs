//! The upstream phase of a primary component: where a Spin app's requests
//! go, declared once as [`Peers`], and exported with
//! [`export_upstream!`](crate::export_upstream) as
//! `tollgate:gate/upstream@0.4.0` (`wit/upstream.wit`), so that Tollgate's
//! host forwards requests itself on its fast path. The component's own
//! `wasi:http` handler, which Spin runs, forwards by the same [`Peers`].

use crate::config::Vars;

wit_bindgen::generate!({
    path: "../../wit",
    world: "tollgate:gate/origin",
    pub_export_macro: true,
    export_macro_name: "__export_origin",
    default_bindings_module: "tollgate_sdk::upstream",
});

use exports::tollgate::gate::upstream as wit;

/// Where a primary component forwards, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers {
    /// (path prefix without a trailing `/`, `scheme://host[:port]`),
    /// longest prefix first; the prefix `""` matches every path.
    pub routes: Vec<(String, String)>,
    pub response_timeout_ms: u64,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    pub max_body_bytes: usize,
    /// Addresses and CIDR networks whose forwarding headers are kept.
    pub trusted_proxies: Vec<String>,
}

/// What `init` does: `peers` decides from the variables, and a refusal
/// becomes the config errors the host reports at startup.
pub fn init(
    variables: Vec<(String, String)>,
    peers: fn(&Vars) -> Result<Peers, String>,
) -> Result<wit::Peers, Vec<wit::ConfigError>> {
    let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    match peers(&Vars::from_pairs(variables)) {
        Ok(p) => Ok(wit::Peers {
            routes: p
                .routes
                .into_iter()
                .map(|(prefix, origin)| wit::OriginRoute { prefix, origin })
                .collect(),
            response_timeout_ms: clamp(p.response_timeout_ms),
            max_attempts: p.max_attempts,
            backoff_base_ms: clamp(p.backoff_base_ms),
            backoff_cap_ms: clamp(p.backoff_cap_ms),
            max_body_bytes: p.max_body_bytes as u64,
            trusted_proxies: p.trusted_proxies,
        }),
        Err(e) => {
            let (variable, message) = crate::filter::split_config_error(&e);
            Err(vec![wit::ConfigError {
                variable: variable.to_owned(),
                message: message.to_owned(),
            }])
        }
    }
}

/// Exports `$peers: fn(&Vars) -> Result<Peers, String>` as the
/// component's `tollgate:gate/upstream` export. The component still
/// exports its `wasi:http` handler (with
/// [`export_middleware!`](crate::export_middleware)) for Spin.
#[macro_export]
macro_rules! export_upstream {
    ($peers:ident) => {
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = $peers;
        };

        #[cfg(target_arch = "wasm32")]
        mod __tollgate_upstream {
            pub struct Origin;

            $crate::upstream::__export_origin!(Origin with_types_in $crate::upstream);

            impl $crate::upstream::exports::tollgate::gate::upstream::Guest for Origin {
                fn init(
                    variables: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::core::result::Result<
                    $crate::upstream::exports::tollgate::gate::upstream::Peers,
                    ::std::vec::Vec<$crate::upstream::exports::tollgate::gate::upstream::ConfigError>,
                > {
                    $crate::upstream::init(variables, super::$peers)
                }
            }
        }
    };
}
