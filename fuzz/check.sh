#!/usr/bin/env bash
# Builds the fuzz targets with whatever toolchain is at hand, so a test suite can assert they compile.
#
#   fuzz/check.sh              build every target on the default (stable) toolchain: plain `cargo build`,
#                              libFuzzer linked in, no coverage instrumentation (takes ~1 min cold)
#   fuzz/check.sh --smoke      ... then run each binary on 20 000 random inputs (not coverage-guided)
#   fuzz/check.sh --fuzz SECS  ... then, if cargo-fuzz is installed, fuzz each target for SECS seconds
#                              with `cargo +nightly fuzz run`, or `RUSTC_BOOTSTRAP=1 cargo fuzz run`
#                              where there is no nightly (coverage-guided, AddressSanitizer)
#
# Exits non-zero when a target does not build, or when a smoke or fuzz run finds a crash.
set -euo pipefail

cd "$(dirname "$0")"
TARGETS=(packet_decoder link_decoder locator_event annotations_file duration load_report)

mode="${1:-build}"
locked=()
[[ -f Cargo.lock ]] && locked=(--locked)

echo "fuzz/check.sh: building ${TARGETS[*]} ($(cargo --version))"
cargo build "${locked[@]}" --bins

case "$mode" in
build) ;;
--smoke)
    for target in "${TARGETS[@]}"; do
        echo "fuzz/check.sh: smoke-running $target"
        "target/debug/$target" -runs=20000 -max_len=4096 -seed=1 2>&1 | tail -n 1
    done
    ;;
--fuzz)
    secs="${2:?usage: fuzz/check.sh --fuzz SECONDS}"
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "fuzz/check.sh: cargo-fuzz is not installed (cargo install cargo-fuzz --locked); built only"
        exit 0
    fi
    # cargo fuzz needs nightly-only flags (-Zsanitizer, sancov); on a stable-only machine
    # RUSTC_BOOTSTRAP=1 lets stable rustc accept them.
    if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
        fuzz=(cargo +nightly fuzz)
    else
        fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
    fi
    for target in "${TARGETS[@]}"; do
        echo "fuzz/check.sh: fuzzing $target for ${secs}s"
        log="$(mktemp)"
        if ! "${fuzz[@]}" run "$target" -- -max_total_time="$secs" -max_len=4096 >"$log" 2>&1; then
            grep -E -A3 'panicked|SUMMARY|Failing input' "$log" >&2 || tail -n 40 "$log" >&2
            rm -f "$log"
            echo "fuzz/check.sh: $target crashed; the input is under fuzz/artifacts/$target/" >&2
            exit 1
        fi
        grep -E '^Done' "$log" || true
        rm -f "$log"
    done
    ;;
*)
    echo "usage: fuzz/check.sh [--smoke | --fuzz SECONDS]" >&2
    exit 2
    ;;
esac
echo "fuzz/check.sh: ok"
