# Sourced by bench scripts: a release build, a work folder removed at exit, and a mount
# of it that is stopped at exit (unmounted, then its process killed by PID).
#   . bench/common.sh NAME     -> BIN, W (the work folder), MNT (its mountpoint)
#   bench_mount MANIFEST       -> mounts at $MNT in the background, waits until it serves
#   bench_library_mount KEYS   -> $W/m.toml (state in $W/state, KEYS, one local origin
#                                 `bench` at $W/lib), scanned, then mounted as above
cargo build --release --workspace -q
BIN=$PWD/target/release/musefs
W=$(mktemp -d "/tmp/musefs-bench-$1.XXXXXX")
MNT=$W/mnt
PID=
bench_cleanup() {
  fusermount3 -u -z "$MNT" 2>/dev/null || true
  if [ -n "$PID" ]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true   # it writes its snapshot on the way out
  fi
  rm -rf "$W"
}
trap bench_cleanup EXIT
mkdir -p "$MNT"
bench_mount() {
  "$BIN" mount --manifest "$1" "$MNT" 2>"$W/mount.log" &
  PID=$!
  for _ in $(seq 3000); do grep -q "mounted at" "$W/mount.log" 2>/dev/null && break; sleep 0.01; done
}
bench_library_mount() {
  cat > "$W/m.toml" <<TOML
state_dir = "$W/state"
$1
[[origin]]
name = "bench"
kind = "local"
root = "$W/lib"
TOML
  "$BIN" scan --manifest "$W/m.toml" >/dev/null
  bench_mount "$W/m.toml"
}
