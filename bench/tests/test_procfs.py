"""bench/harness/procfs.py's readings that parse /proc text: the TIME_WAIT count the scale phase waits on."""

from __future__ import annotations

import socket
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import procfs  # noqa: E402


class TimeWait(unittest.TestCase):
    def test_the_tw_field_of_the_tcp_line_is_read(self):
        with tempfile.NamedTemporaryFile("w", suffix=".sockstat") as f:
            f.write("sockets: used 8\nTCP: inuse 1 orphan 0 tw 28177 alloc 1 mem 151\nUDP: inuse 0 mem 0\n")
            f.flush()
            self.assertEqual(procfs.time_wait_sockets(f.name), 28177)

    def test_a_socket_closed_first_by_us_is_counted_in_time_wait(self):
        before = procfs.time_wait_sockets()
        with socket.create_server(("127.0.0.1", 0)) as server:
            client = socket.create_connection(server.getsockname())
            accepted, _ = server.accept()
            client.close()  # the side that closes first keeps the TIME_WAIT
            accepted.recv(1)
            accepted.close()
        self.assertGreater(procfs.time_wait_sockets(), before)


if __name__ == "__main__":
    unittest.main()
