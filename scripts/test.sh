#!/usr/bin/env bash
# Runs every test of the workspace, the heavy ones (root, OVN, namespaces, real kubectl)
# included. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Style and lints first: a formatting slip or a new warning fails the run.
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
cargo test --workspace --no-fail-fast -- --include-ignored
