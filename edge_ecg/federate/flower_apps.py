"""The ServerApp and ClientApp objects ``flwr run`` loads for ``federate --deployment`` (edge_ecg.federate.deploy).

Flower finds them by name (``edge_ecg.federate.flower_apps:server_app``); importing this module
imports Flower and TensorFlow, so nothing else imports it.
"""

from edge_ecg.federate.deploy import _make_client_app, _make_server_app

server_app = _make_server_app()
client_app = _make_client_app()
