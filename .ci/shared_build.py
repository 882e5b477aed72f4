#!/usr/bin/env python3
"""Checks that the README's run command reuses the test command's build.

Run after `cargo test --release --workspace`. Builds what
`cargo run --release -p tollgate` builds and fails if any crate from
outside the workspace is compiled again: a dependency resolved with
different features under `-p tollgate` than under `--workspace` would be
rebuilt, with everything above it (wasmtime among them). The
workspace-hack crate (`cargo hakari`, see .config/hakari.toml) is what
keeps the two resolutions equal; after changing dependencies, run
`cargo hakari generate && cargo hakari manage-deps`.

Nothing here is timed: the check reads cargo's own `fresh` flag.
"""
import json
import subprocess
import sys

cmd = ["cargo", "build", "--release", "--locked", "-p", "tollgate",
       "--message-format=json-render-diagnostics"]
proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
if proc.returncode != 0:
    sys.exit(f"shared build: `{' '.join(cmd)}` failed")

rebuilt, workspace = [], []
for line in proc.stdout.splitlines():
    try:
        msg = json.loads(line)
    except json.JSONDecodeError:
        continue
    if msg.get("reason") != "compiler-artifact" or msg.get("fresh"):
        continue
    pkg = msg["package_id"]
    name = msg["target"]["name"]
    (workspace if pkg.startswith("path+file://") else rebuilt).append(f"{name} ({pkg})")

for w in workspace:
    print(f"shared build: workspace crate compiled again: {w}")
if rebuilt:
    print("shared build: the run command rebuilt dependencies the test command "
          "had built (features differ; run `cargo hakari generate && cargo hakari "
          "manage-deps`):", file=sys.stderr)
    for r in rebuilt:
        print(f"  {r}", file=sys.stderr)
    sys.exit(1)
print(f"shared build: ok ({len(workspace)} workspace crates compiled again, "
      "no dependencies)")
