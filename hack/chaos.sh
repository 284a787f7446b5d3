#!/usr/bin/env bash
# The refresh-chain chaos test (tests/chaos.rs), run for longer than CI's 45 s: two operator
# replicas with leader election on a control plane of their own, while leaders are SIGKILLed
# and SIGTERMed, the API server restarts and the token endpoint slows down, answers 503 or
# hangs. It prints a CHAOS SUMMARY line; operator logs land in target/e2e-logs/.
#
# Usage: hack/chaos.sh
# Environment:
#   CHAOS_SECONDS        how long the chaos lasts (default 600 here, 45 in CI)
#   CHAOS_GRACE_SECONDS  how long the provider still accepts a replaced refresh token
#                        (default 30; 0 = strict rotation, where only a SIGKILL may break a chain)
#   CHAOS_SEED           the schedule's seed (default random; printed, to repeat a run)
#   CHAOS_RUST_LOG       the operators' RUST_LOG (default info,token_rotator=debug)
#   TOKEN_ROTATOR_K8S_BIN  kube-apiserver, etcd, ... (default: the hack/provision.sh cache)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CHAOS_SECONDS="${CHAOS_SECONDS:-600}" exec cargo test --features e2e --test chaos -- --nocapture
