"""A PostgreSQL server of the distribution, started in a temporary folder for tests and benches."""

import os
import shutil
import socket
import subprocess
from pathlib import Path

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
POSTGRES_USER = "tripletface-pg"  # the unprivileged account that runs the server under root


class PostgresServer:
    """A PostgreSQL server of the distribution in a temporary folder, on a loopback port."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.data = folder / "data"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._user = {}
        if os.geteuid() == 0:
            if subprocess.run(["id", POSTGRES_USER], capture_output=True).returncode != 0:
                subprocess.run(
                    [
                        "useradd",
                        "--system",
                        "--no-create-home",
                        "--shell",
                        "/usr/sbin/nologin",
                        POSTGRES_USER,
                    ],
                    check=True,
                )
            shutil.chown(folder, POSTGRES_USER)
            self._user = {"user": POSTGRES_USER}
        self._run("initdb", "-D", self.data, "-U", "tripletface", "--auth=trust", "-E", "UTF8")

    def _run(self, program: str, *args) -> None:
        subprocess.run(
            [POSTGRES_BIN / program, *map(str, args)],
            check=True,
            capture_output=True,
            cwd=self.folder,
            **self._user,
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "-D", self.data, "-l", self.folder / "log", "-o", options, "-w", "start"
        )

    def stop(self) -> None:
        """Stop the server at once (clients see their connections drop)."""
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def url(self, schema: str) -> str:
        """A URL whose tables live in their own schema (created now), one per test."""
        import psycopg

        base = f"postgresql://tripletface@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        return f"{base}?options=-csearch_path%3D{schema}"
