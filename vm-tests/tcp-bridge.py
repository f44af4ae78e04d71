#!/usr/bin/env python3
"""Bridges one guest TCP connection (stdin/stdout, from QEMU's guestfwd=...-cmd:) to HOST:PORT.

  guestfwd=tcp:169.254.0.80:80-cmd:tcp-bridge.py 127.0.0.1 5000
lets the guest reach a server on the host's loopback (moto_server for Route53) through a
restrict=on user network, without opening anything else."""

import os
import select
import socket
import sys


def main():
    sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    sock.settimeout(None)
    inp, out = sys.stdin.fileno(), sys.stdout.fileno()
    fds = [inp, sock]
    while fds:
        ready, _, _ = select.select(fds, [], [], 120)
        if not ready:
            return
        for r in ready:
            if r is inp:
                data = os.read(inp, 65536)
                if not data:
                    sock.shutdown(socket.SHUT_WR)
                    fds.remove(inp)
                else:
                    sock.sendall(data)
            else:
                data = sock.recv(65536)
                if not data:
                    return
                while data:
                    n = os.write(out, data)
                    data = data[n:]


if __name__ == "__main__":
    main()
