# Shared by the conformance scripts: the Python venv with the pinned test peers, and ports.

KOSOKU_VERSION=0.1.0
WEBSOCKETS_VERSION=17.4
VENV=target/conformance-venv

# Creates the venv under target/ with the pinned kosoku and websockets, once.
ensure_venv() {
    if ! "$VENV/bin/python" - "$KOSOKU_VERSION" "$WEBSOCKETS_VERSION" 2>/dev/null <<'PY'
import importlib.metadata as m, sys
sys.exit(m.version("kosoku") != sys.argv[1] or m.version("websockets") != sys.argv[2])
PY
    then
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check \
            "kosoku==$KOSOKU_VERSION" "websockets==$WEBSOCKETS_VERSION"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
    python3 - "$1" <<'PY'
import socket, sys, time
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit("port %s did not open" % sys.argv[1])
PY
}
