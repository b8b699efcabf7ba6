#!/usr/bin/env bash
# Runs every test of the workspace, the heavy ones (root, OVN, namespaces, real kubectl)
# included. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --workspace --bins
cargo test --workspace --no-fail-fast -- --include-ignored
