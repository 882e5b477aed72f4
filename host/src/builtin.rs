//! The built-in gate components, compiled into the binary by the build
//! script so `builtin:NAME` works with nothing else installed.

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));
