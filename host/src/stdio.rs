//! Component stdout and stderr, turned into gateway log events tagged with
//! the route and the component that wrote them. Lines are capped in length
//! so a chatty guest cannot grow the gateway's memory.
//!
//! Composition merges every component's `wasi:cli/stdout` and `stderr`
//! imports into one, so the host cannot tell components apart by import.
//! Instead `get-stdout`/`get-stderr` are served here (shadowing
//! wasmtime-wasi's): each call looks at the innermost wasm frame, which is
//! the component asking, and hands back a stream tagged with its name (the
//! name its build gave it, as in trap logs: `tollgate_auth`). Streams
//! obtained any other way keep the chain-wide tag.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::DynOutputStream;

/// The `wasi:cli` version wasmtime-wasi 48 defines; components' older
/// 0.2.x imports resolve to it.
const STDOUT: &str = "wasi:cli/stdout@0.2.12";
const STDERR: &str = "wasi:cli/stderr@0.2.12";

/// Store data that can hand out tagged stdio streams.
pub trait HasStdio: Send + 'static {
    /// The instance's resource table and its route's name.
    fn stdio(&mut self) -> (&mut ResourceTable, &str);
}

/// Serves `get-stdout` and `get-stderr` with per-component tags. Call after
/// wasmtime-wasi's `add_to_linker`.
pub fn add_to_linker<T: HasStdio>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    for (interface, func, stream) in [
        (STDOUT, "get-stdout", "stdout"),
        (STDERR, "get-stderr", "stderr"),
    ] {
        linker.instance(interface)?.func_wrap(
            func,
            move |mut store: StoreContextMut<'_, T>,
                  (): ()|
                  -> wasmtime::Result<(Resource<DynOutputStream>,)> {
                let component = calling_component(&store);
                let (table, route) = store.data_mut().stdio();
                let tag: Arc<str> = format!("{route}:{component}").into();
                let out = LogStream::new(tag, stream).p2_stream();
                Ok((table.push(out)?,))
            },
        )?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// The component whose code is running: the module of the innermost wasm
/// frame, named as its build named it.
fn calling_component<T>(store: &StoreContextMut<'_, T>) -> String {
    let bt = wasmtime::WasmBacktrace::capture(store);
    bt.frames()
        .first()
        .and_then(|f| f.module().name())
        .map(|n| n.trim_end_matches(".wasm").to_owned())
        .unwrap_or_else(|| "unknown".into())
}

const MAX_LINE: usize = 4096;

/// A `StdoutStream` whose every line becomes a log event.
#[derive(Clone)]
pub struct LogStream {
    tag: Arc<str>,
    stream: &'static str,
}

impl LogStream {
    pub fn new(tag: Arc<str>, stream: &'static str) -> Self {
        Self { tag, stream }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            stream: self.clone(),
            line: Vec::new(),
        })
    }
}

struct LineWriter {
    stream: LogStream,
    line: Vec<u8>,
}

impl LineWriter {
    /// Logs the line; one that starts `ERROR ` or `WARN ` (the SDK's
    /// convention, which Spin shows as it is) is logged at that level.
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        let (tag, stream) = (&self.stream.tag, self.stream.stream);
        if let Some(rest) = text.strip_prefix("ERROR ") {
            tracing::error!(target: "tollgate::component", component = %tag, stream, "{}", rest.trim_end());
        } else if let Some(rest) = text.strip_prefix("WARN ") {
            tracing::warn!(target: "tollgate::component", component = %tag, stream, "{}", rest.trim_end());
        } else {
            tracing::info!(target: "tollgate::component", component = %tag, stream, "{}", text.trim_end());
        }
        self.line.clear();
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        for &b in buf {
            if b == b'\n' {
                self.emit();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.line.is_empty() {
            self.emit();
        }
        Poll::Ready(Ok(()))
    }
}
