"""The real peers the documented examples need: SMTP (aiosmtpd), a Matrix push gateway over
HTTPS, clamd."""

from tests.handlers.conftest import http_peer, smtp_server, tls_ca
from tests.handlers.peers_files import clamd

__all__ = ["clamd", "http_peer", "smtp_server", "tls_ca"]
