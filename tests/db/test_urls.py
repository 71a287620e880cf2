"""DATABASE_URL's forms (the README's table) reach the server they name."""

from __future__ import annotations


def test_database_url_with_unix_socket_option(mariadb, start_daemon):
    """DATABASE_URL's ?unix_socket= form reaches MariaDB as well as the %2F-encoded host form."""
    url = f"mysql://root@localhost/socketsvc_test?unix_socket={mariadb.socket}"
    daemon = start_daemon(url)
    assert daemon.call("testapp.connection_id") > 0
