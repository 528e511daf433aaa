"""The real peers the documented examples need: SMTP (aiosmtpd) and a Matrix push gateway
over HTTPS (fixtures of tests/handlers); clamd comes from tests.handlers.peers_files, loaded
as a plugin by the test module."""

from tests.handlers.conftest import http_peer, smtp_server, tls_ca

__all__ = ["http_peer", "smtp_server", "tls_ca"]
