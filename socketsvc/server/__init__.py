"""One process serving the socket.

A request travels down this package and its reply back up: the listening
socket (``listener``), the selectors loop (``loop``, ``selector``,
``signals``, ``control``), the connection table (``connections``: admit,
read, route, reply, close) with its caps (``admission``) and its peers'
credentials (``access``), one socket's buffered I/O (``transport``), one
connection's request state (``connection``), the router that answers
built-ins and refusals and hands calls to the thread pool (``router``,
``threads``), the one channel from threads back to the loop (``handback``),
the request line (``requestlog``) and what systemd and ``rpc.status`` hear
(``health``).
"""
