#!/usr/bin/env python3
"""Interoperability with Python's `websockets`, a second independent implementation.

1. `websockets` clients against our `echo_server --deflate`, under several permessage-deflate
   parameter sets, text and binary messages of many sizes, every echo checked.
2. `websockets` echo servers under several parameter sets, and our `interop_client` against each.
3. The same both ways over TLS (`wss://localhost`), with a CA and a server certificate made by
   the `openssl` command for this run: Python's `ssl` verifies ours, rustls verifies Python's.

Usage: interop.py BIN_DIR   (the directory holding the release examples)
"""

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import tempfile

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)

SIZES = [0, 1, 125, 126, 1000, 65535, 65536, 300_000, 1 << 20]

# (name, keyword arguments for both factories)
PARAMETER_SETS = [
    ("defaults", {}),
    ("server_no_context_takeover", {"server_no_context_takeover": True}),
    ("client_no_context_takeover", {"client_no_context_takeover": True}),
    ("both_no_context_takeover", {"server_no_context_takeover": True, "client_no_context_takeover": True}),
    ("server_max_window_bits=10", {"server_max_window_bits": 10}),
    ("client_max_window_bits=9", {"client_max_window_bits": 9}),
    ("windows_12_and_11", {"server_max_window_bits": 12, "client_max_window_bits": 11}),
]


def payload(size, seed):
    chunk = b'{"id":%d,"name":"sockeye","tags":["a","b"]} ' % seed
    data = (chunk * (size // len(chunk) + 1))[:size]
    return bytes(b ^ ((i * 31 + seed) & 0x0F) if (i // 700) % 3 == 2 else b for i, b in enumerate(data))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_port(port):
    for _ in range(600):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


async def python_clients_against_our_server(bin_dir):
    port = free_port()
    server = subprocess.Popen([os.path.join(bin_dir, "echo_server"), f"127.0.0.1:{port}", "--deflate"])
    try:
        await wait_port(port)
        for name, params in PARAMETER_SETS:
            factory = ClientPerMessageDeflateFactory(**params)
            async with connect(f"ws://127.0.0.1:{port}/", extensions=[factory], compression=None, max_size=None) as ws:
                answer = ws.response.headers.get("Sec-WebSocket-Extensions", "")
                assert answer.startswith("permessage-deflate"), f"{name}: answer {answer!r}"
                count = 0
                for seed, size in enumerate(SIZES):
                    data = payload(size, seed)
                    for message in (data.decode("ascii"), data):
                        await ws.send(message)
                        echo = await asyncio.wait_for(ws.recv(), 30)
                        assert echo == message, f"{name}: echo of {size} bytes differs"
                        count += 1
            print(f"websockets client -> sockeye server [{name}]: {count} echoes matched; answer {answer!r}")
    finally:
        server.terminate()
        server.wait()


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def our_client_against_python_servers(bin_dir):
    client = os.path.join(bin_dir, "interop_client")
    # (server factory parameters, our client's options)
    runs = [
        ({}, []),
        ({"server_no_context_takeover": True}, []),
        ({"client_no_context_takeover": True}, []),
        ({}, ["--server-no-context-takeover", "--client-no-context-takeover"]),
        ({"server_max_window_bits": 11}, []),
        ({"client_max_window_bits": 10}, []),
        ({}, ["--server-max-window-bits", "9", "--client-max-window-bits", "12"]),
    ]
    for params, options in runs:
        factory = ServerPerMessageDeflateFactory(**params)
        port = free_port()
        async with serve(echo, "127.0.0.1", port, extensions=[factory], compression=None, max_size=None):
            proc = await asyncio.create_subprocess_exec(client, f"ws://127.0.0.1:{port}/", *options)
            code = await asyncio.wait_for(proc.wait(), 120)
            assert code == 0, f"interop_client failed against websockets server {params} with {options}"
        print(f"sockeye client -> websockets server [{params or 'defaults'} / {options or 'defaults'}]: ok")


def make_certificates(directory):
    """A CA, and a server certificate for localhost and 127.0.0.1 signed by it, valid two days."""

    def run(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=sockeye interop CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    with open(os.path.join(directory, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    with open(os.path.join(directory, "chain.pem"), "w") as chain:
        for name in ("server.pem", "ca.pem"):
            with open(os.path.join(directory, name)) as part:
                chain.write(part.read())
    return {name: os.path.join(directory, name) for name in ("ca.pem", "chain.pem", "server.key")}


async def python_tls_client_against_our_server(bin_dir, certs):
    port = free_port()
    server = subprocess.Popen([os.path.join(bin_dir, "echo_server"), f"127.0.0.1:{port}", "--deflate",
                               "--tls-cert", certs["chain.pem"], "--tls-key", certs["server.key"]])
    try:
        await wait_port(port)
        context = ssl.create_default_context(cafile=certs["ca.pem"])
        async with connect(f"wss://localhost:{port}/", ssl=context, max_size=None) as ws:
            tls = ws.transport.get_extra_info("ssl_object")
            count = 0
            for seed, size in enumerate(SIZES):
                data = payload(size, seed)
                for message in (data.decode("ascii"), data):
                    await ws.send(message)
                    echo = await asyncio.wait_for(ws.recv(), 30)
                    assert echo == message, f"tls: echo of {size} bytes differs"
                    count += 1
            print(f"websockets client -> sockeye server over {tls.version()} "
                  f"(ALPN {tls.selected_alpn_protocol()!r}): {count} echoes matched")
        # A client that does not trust our CA must fail verification.
        try:
            async with connect(f"wss://localhost:{port}/", ssl=ssl.create_default_context()):
                raise AssertionError("an untrusted certificate was accepted")
        except ssl.SSLCertVerificationError as e:
            print(f"websockets client without our CA refused the certificate: {e.verify_message}")
    finally:
        server.terminate()
        server.wait()


async def our_client_against_python_tls_server(bin_dir, certs):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs["chain.pem"], certs["server.key"])
    port = free_port()
    client = os.path.join(bin_dir, "interop_client")
    async with serve(echo, "127.0.0.1", port, ssl=context, max_size=None):
        proc = await asyncio.create_subprocess_exec(client, f"wss://localhost:{port}/", "--ca", certs["ca.pem"])
        code = await asyncio.wait_for(proc.wait(), 120)
        assert code == 0, "interop_client failed against the websockets TLS server"
        # Without our CA, the default roots refuse the certificate: the client must fail.
        proc = await asyncio.create_subprocess_exec(client, f"wss://localhost:{port}/",
                                                    stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode != 0, "interop_client accepted an untrusted certificate"
        assert b"unknown authority" in err, f"unexpected error: {err!r}"
    print("sockeye client -> websockets server over TLS: ok; without the CA: refused (unknown authority)")


async def main():
    bin_dir = sys.argv[1]
    await python_clients_against_our_server(bin_dir)
    await our_client_against_python_servers(bin_dir)
    with tempfile.TemporaryDirectory() as directory:
        certs = make_certificates(directory)
        await python_tls_client_against_our_server(bin_dir, certs)
        await our_client_against_python_tls_server(bin_dir, certs)
    print("interop: all runs passed")


if __name__ == "__main__":
    asyncio.run(main())
