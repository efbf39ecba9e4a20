#!/usr/bin/env bash
# The one test command (README's TEST line; .ci/run calls exactly this).
#
# Installs what the tests need on Debian (apt and pip packages, cargo-nextest), quietly
# and only what is missing, then runs clippy with warnings denied and the whole test
# suite: unit tests, the middle tier (serving core, fakes) and the end-to-end tests
# (real encoders, a moto S3 server and a private sshd started by the tests, real mounts),
# then every fuzz target for 20 s.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive

apt_pkgs=(fuse3 flac lame vorbis-tools opus-tools sox ffmpeg mp3val atomicparsley pkg-config
          openssh-server openssh-client procps python3-pip systemd util-linux curl mpd mpc
          id3v2 eyed3 strace)
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "tests/run.sh: installing ${missing[*]}" >&2
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
py_need=()
python3 -c 'import mutagen' 2>/dev/null || py_need+=(mutagen)
python3 -c 'import moto.server, boto3, flask' 2>/dev/null || py_need+=('moto[server]' boto3)
command -v beet >/dev/null || py_need+=(beets)
if [ ${#py_need[@]} -gt 0 ]; then
    echo "tests/run.sh: pip installing ${py_need[*]}" >&2
    python3 -m pip install -q "${py_need[@]}" 2>/dev/null \
        || python3 -m pip install -q --break-system-packages "${py_need[@]}"
fi
# The SFTP tests start a private sshd; it wants its privilege-separation directory.
[ -d /run/sshd ] || $SUDO mkdir -p /run/sshd
command -v cargo-nextest >/dev/null || cargo install --locked --quiet cargo-nextest
command -v cargo-clippy >/dev/null || rustup component add clippy
test -e /dev/fuse || { echo "tests/run.sh: /dev/fuse is missing: the end-to-end tests need FUSE" >&2; exit 1; }

cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --quiet
# The out-of-tree example plugin runs the format behaviour suite on itself, as a third
# party's crate would (it is not a workspace member).
cargo test --quiet --manifest-path examples/format-wav/Cargo.toml --target-dir target/fixtures
# The randomized tests (the property tests; the damaged-file corpora, MUSEFS_TEST_SEED)
# run from fixed seeds here, on fixtures that are the same on every run, so that a run
# never depends on luck; tests/soak.sh runs them again and again from new seeds to look
# for the rare input that breaks them.
export PROPTEST_RNG_SEED=${PROPTEST_RNG_SEED:-20261207}
cargo nextest run --workspace --no-fail-fast "$@"
# Every fuzz target for a short, bounded time (MUSEFS_FUZZ_SECS, default 20 s each; 0
# skips) on corpora seeded from the demo library, so a regression in a parser surfaces
# here. Longer runs while developing: fuzz/run.sh 300. Skipped with a note where no
# nightly toolchain is installed (cargo-fuzz needs it).
if [ $# -eq 0 ] && [ "${MUSEFS_FUZZ_SECS:-20}" != 0 ]; then
    fuzz/run.sh "${MUSEFS_FUZZ_SECS:-20}"
fi
