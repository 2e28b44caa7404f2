#!/usr/bin/env python3
"""Interoperability with Python's `websockets`, a second independent implementation.

1. `websockets` clients against our `echo_server --deflate`, under several permessage-deflate
   parameter sets, text and binary messages of many sizes, every echo checked.
2. `websockets` echo servers under several parameter sets, and our `interop_client` against each.

Usage: interop.py BIN_DIR   (the directory holding the release examples)
"""

import asyncio
import os
import socket
import subprocess
import sys

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


async def main():
    bin_dir = sys.argv[1]
    await python_clients_against_our_server(bin_dir)
    await our_client_against_python_servers(bin_dir)
    print("interop: all runs passed")


if __name__ == "__main__":
    asyncio.run(main())
