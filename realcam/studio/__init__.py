"""realcam studio: steer the camera live in a browser (``realcam studio``; docs/studio.md).

:mod:`~realcam.studio.server` (FastAPI app, WebSocket, upload), :mod:`~realcam.studio.session` (one tab's
generator on a worker thread), :mod:`~realcam.studio.camera` (steering, presets, record and replay),
:mod:`~realcam.studio.sources` (synthetic, upload, webcam), :mod:`~realcam.studio.protocol` (the messages),
:mod:`~realcam.studio.bench` (browser FPS and the load test). Only the public ``StreamingGenerator`` API is used.
"""
