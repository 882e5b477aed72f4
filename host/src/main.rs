//! `tollgate`: the command line. `serve` runs the gateway, `up` runs a Spin
//! app's spin.toml, `check` validates a config without serving, and
//! `demo-origin` runs the bundled demo origin on its own.

use tollgate::store::KvBackend;
use tollgate::{config, demo_origin, gateway, ingress, manifest, runtime_config, telemetry};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

/// The configuration used when `serve` is given no `--config`.
const DEFAULT_CONFIG: &str = include_str!("../../examples/tollgate.toml");
/// Where the default configuration expects its origin.
const DEMO_ORIGIN: &str = "127.0.0.1:9000";

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Edge gateway built from WebAssembly middleware"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    #[command(
        after_help = "Examples:\n  tollgate serve -c tollgate.toml\n  tollgate serve --demo        (bundled config and demo origin)"
    )]
    Serve {
        /// Configuration file (default: the bundled examples/tollgate.toml).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Also run the bundled demo origin on 127.0.0.1:9000.
        #[arg(long)]
        demo: bool,
        /// Reload when the config file, or a component .wasm it names,
        /// changes (polled twice a second). Needs --config.
        #[arg(long, requires = "config")]
        watch: bool,
    },
    /// Run a Spin app's spin.toml: its HTTP triggers, with their middleware.
    #[command(
        after_help = "Example:\n  SPIN_VARIABLE_ORIGIN_URL=http://127.0.0.1:9000 tollgate up -f spin.toml --listen 127.0.0.1:3000"
    )]
    Up {
        /// The manifest.
        #[arg(short = 'f', long = "file", default_value = "spin.toml")]
        file: PathBuf,
        /// Where to listen (Spin's default port).
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
        /// Admin listener for /metrics, /healthz and /readyz.
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Spin's runtime configuration: where the `default` key-value
        /// store lives (`type = "redis"`).
        #[arg(long = "runtime-config-file")]
        runtime_config: Option<PathBuf>,
        /// Run every middleware as a composed `wasi:http` handler, as Spin
        /// does, even those that offer the filter fast path.
        #[arg(long = "no-fast-path")]
        no_fast_path: bool,
    },
    /// Validate a configuration file and exit (2 if it is invalid).
    #[command(
        after_help = "Examples:\n  tollgate check -c tollgate.toml\n  tollgate check tollgate.toml"
    )]
    Check {
        /// Configuration file.
        #[arg(short, long = "config", value_name = "FILE", conflicts_with = "file")]
        config: Option<PathBuf>,
        /// The same, given without `-c`.
        #[arg(value_name = "FILE", required_unless_present = "config")]
        file: Option<PathBuf>,
    },
    /// Run only the bundled demo origin.
    #[command(after_help = "Example:\n  tollgate demo-origin --listen 127.0.0.1:9000")]
    DemoOrigin {
        #[arg(long, default_value = DEMO_ORIGIN)]
        listen: SocketAddr,
        /// Answer every request with a fixed 3-byte body (for load tests).
        #[arg(long)]
        fixed: bool,
        /// Wait this long before every answer (to try out balancing).
        #[arg(long, value_name = "MS", default_value_t = 0)]
        delay_ms: u64,
    },
}

fn main() -> ExitCode {
    // Held to the end of main: dropping it flushes buffered log lines.
    let _log = telemetry::init_logging();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the async runtime");
    match cli.command {
        Command::Check { config, file } => {
            let config = config.or(file).expect("clap requires one of them");
            check(&runtime, &config)
        }
        Command::Up {
            file,
            listen,
            admin,
            runtime_config,
            no_fast_path,
        } => {
            let loaded =
                manifest::load(&file, &config::Env::process(), listen, admin).and_then(|mut c| {
                    c.fast_path = !no_fast_path;
                    match &runtime_config {
                        Some(path) => runtime_config::apply(path, &mut c).map(|()| c),
                        None => Ok(c),
                    }
                });
            serve_loaded(&runtime, loaded, false, None)
        }
        Command::DemoOrigin {
            listen,
            fixed,
            delay_ms,
        } => {
            let delay = std::time::Duration::from_millis(delay_ms);
            match runtime.block_on(demo_origin::run(listen, fixed, delay)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve {
            config,
            demo,
            watch,
        } => {
            let loaded = match &config {
                Some(path) => config::load(path, &config::Env::process()),
                None => config::parse(
                    DEFAULT_CONFIG,
                    std::path::Path::new("."),
                    &config::Env::process(),
                ),
            };
            // A config file is reloaded on SIGHUP; the bundled one is not.
            let reload = config.map(|path| Reload { path, watch });
            serve_loaded(&runtime, loaded, demo, reload)
        }
    }
}

/// Serves a loaded configuration: exit 2 for an invalid one, 1 when
/// startup fails, 0 after a graceful shutdown.
/// `tollgate check`: loads and builds the configuration without serving.
fn check(runtime: &tokio::runtime::Runtime, config: &std::path::Path) -> ExitCode {
    match config::load(config, &config::Env::process()) {
        Ok(mut c) => {
            // Composition and linking problems count as config errors
            // too. A check validates the file; it does not need the
            // shared store to be up, so Redis is not contacted.
            c.kv.backend = config::KvBackendConfig::Memory;
            c.telemetry.otlp_traces_url = None;
            match runtime.block_on(gateway::build(&c)) {
                Ok(_) => {
                    println!("{}: ok ({} routes)", config.display(), c.routes.len());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("invalid configuration: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Err(e) => {
            eprint!("{e}");
            ExitCode::from(2)
        }
    }
}

fn serve_loaded(
    runtime: &tokio::runtime::Runtime,
    loaded: Result<config::Config, config::ConfigErrors>,
    demo: bool,
    reload_from: Option<Reload>,
) -> ExitCode {
    let cfg = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cfg, demo, reload_from)) {
        Ok(()) => ExitCode::SUCCESS,
        // A component that refused its variables is a configuration error.
        Err(e) if e.downcast_ref::<gateway::ComponentConfigError>().is_some() => {
            eprintln!("invalid configuration: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("tollgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where a served configuration is reloaded from, and whether its files
/// are watched.
struct Reload {
    path: PathBuf,
    watch: bool,
}

async fn run(cfg: config::Config, demo: bool, reload_from: Option<Reload>) -> anyhow::Result<()> {
    let gateway = Arc::new(gateway::build(&cfg).await?);
    gateway.start_background(true);
    if demo {
        let addr: SocketAddr = DEMO_ORIGIN.parse().expect("valid address");
        tokio::spawn(async move {
            if let Err(e) = demo_origin::run(addr, false, std::time::Duration::ZERO).await {
                tracing::error!(error = %e, "demo origin stopped");
            }
        });
    }
    let workers = cfg.workers;
    let mut bound = Vec::new();
    for addr in &cfg.listen {
        let sockets = ingress::bind_reuseport(*addr, workers.max(1))
            .map_err(|e| anyhow::anyhow!("server.listen: cannot bind {addr}: {e}"))?;
        tracing::info!(addr = %sockets[0].local_addr()?, "listening");
        bound.push(ingress::Bound { sockets, tls: None });
    }
    if let Some(settings) = &cfg.tls {
        // Checked by the config already; read again here, for serving.
        let cert = ingress::tls::Certificate::load(settings)?;
        let acceptor = ingress::tls::acceptor(cert.clone(), settings.tls13_only);
        ingress::tls::reload_on_sighup(cert);
        for addr in &settings.listen {
            let sockets = ingress::bind_reuseport(*addr, workers.max(1))
                .map_err(|e| anyhow::anyhow!("server.tls.listen: cannot bind {addr}: {e}"))?;
            tracing::info!(addr = %sockets[0].local_addr()?, "tls listening");
            bound.push(ingress::Bound {
                sockets,
                tls: Some(acceptor.clone()),
            });
        }
    }
    let admin_listener = telemetry::bind_admin(cfg.admin_listen).await?;
    if let KvBackend::Memory(kv) = gateway.kv.clone() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
            loop {
                tick.tick().await;
                kv.sweep();
            }
        });
    }

    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal received");
        let _ = tx.send(true);
    });
    gateway.metrics.ready.store(true, Ordering::Relaxed);
    let metrics = gateway.metrics.clone();
    let live: ingress::Live = Arc::new(arc_swap::ArcSwap::new(gateway));
    let guard = tollgate::admin::auth::Guard::new(cfg.admin_token.as_ref().map(|t| t.0.as_str()));
    let reloader = reload_from.map(|from| {
        let r = tollgate::reload::Reloader::new(from.path, live.clone(), cfg);
        r.on_sighup();
        if from.watch {
            r.watch(tollgate::reload::watch::POLL);
        }
        r
    });
    if let Some(listener) = admin_listener {
        tracing::info!(addr = %listener.local_addr()?, "admin listening");
        let admin = tollgate::admin::Admin {
            live: live.clone(),
            metrics,
            reloader,
            guard,
        };
        tokio::spawn(tollgate::admin::serve(listener, Arc::new(admin)));
    }
    let traces = live.load().traces.clone();
    if workers == 0 {
        // One multi-threaded runtime for every connection.
        let mut listeners = Vec::new();
        for b in bound {
            for s in b.sockets {
                listeners.push(ingress::Listener {
                    tcp: TcpListener::from_std(s)?,
                    tls: b.tls.clone(),
                });
            }
        }
        ingress::serve(live, listeners, rx).await;
    } else {
        ingress::serve_workers(live, bound, workers, rx).await;
    }
    if let Some(t) = traces {
        // Send the spans still buffered before the process exits.
        let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
