"""A live RTSP camera for the tests: Debian's gst-rtsp-server, run with the system Python.

Usage: ``/usr/bin/python3 tests/rtsp_server.py PORT`` serves ``rtsp://127.0.0.1:PORT/test``:
H.264 test pattern (320x240, 10 fps, a key frame every second) and A-law audio (8 kHz) with a
1 kHz tone that is on for 2 s and off for 6 s from the start of the stream, so loudness rules
open and close events at known times. Both sources are live (``is-live``): the server paces
them on its clock, like a real camera. Prints ``ready`` once it listens; stops on SIGTERM or
SIGINT.

python3-gi is built for the system interpreter, not the project's virtualenv, hence a separate
process with nothing but ``gi`` imports.
"""

from __future__ import annotations

import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

VOLUME = 0.9
LAUNCH = (
    "( videotestsrc is-live=true pattern=ball"
    " ! video/x-raw,width=320,height=240,framerate=10/1"
    " ! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10"
    " ! rtph264pay name=pay0 pt=96 config-interval=1"
    f"  audiotestsrc is-live=true name=tone wave=sine freq=1000 volume={VOLUME}"
    " ! audioconvert ! audioresample ! audio/x-raw,rate=8000,channels=1"
    " ! alawenc ! rtppcmapay name=pay1 pt=8 )"
)
TONE_ON_S, TONE_OFF_S = 2, 6
# Debian package of each element LAUNCH uses, to name what is missing
PACKAGES = {
    "videotestsrc": "gstreamer1.0-plugins-base",
    "audiotestsrc": "gstreamer1.0-plugins-base",
    "videoconvert": "gstreamer1.0-plugins-base",
    "audioconvert": "gstreamer1.0-plugins-base",
    "audioresample": "gstreamer1.0-plugins-base",
    "x264enc": "gstreamer1.0-plugins-ugly",
    "rtph264pay": "gstreamer1.0-plugins-good",
    "alawenc": "gstreamer1.0-plugins-good",
    "rtppcmapay": "gstreamer1.0-plugins-good",
    "rtpbin": "gstreamer1.0-plugins-good",
}


class Tone:
    """Switches one media's tone on and off, from the moment a client first asks for it, so
    the tone starts with the stream: on from 0 to 2 s of media time, off until 8 s, and so on."""

    def __init__(self, source: Gst.Element) -> None:
        self.source = source
        self.on = True
        GLib.timeout_add_seconds(TONE_ON_S, self.toggle)

    def toggle(self) -> bool:
        self.on = not self.on
        self.source.set_property("volume", VOLUME if self.on else 0.0)
        GLib.timeout_add_seconds(TONE_ON_S if self.on else TONE_OFF_S, self.toggle)
        return False  # this timeout is done; the next one is scheduled above


def configure(_factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
    Tone(media.get_element().get_by_name("tone"))  # its pending timeout keeps it alive


def main(port: int) -> None:
    Gst.init(None)
    missing = [
        f"{name} ({package})"
        for name, package in PACKAGES.items()
        if not Gst.ElementFactory.find(name)
    ]
    if missing:  # otherwise the server starts and only a client's DESCRIBE fails, vaguely
        sys.exit("rtsp_server: missing GStreamer elements: " + ", ".join(missing))
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(LAUNCH)
    factory.set_shared(True)
    factory.connect("media-configure", configure)
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        sys.exit(f"rtsp_server: cannot listen on 127.0.0.1:{port}")
    loop = GLib.MainLoop()

    def quit_loop() -> bool:
        loop.quit()
        return False

    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, quit_loop)
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main(int(sys.argv[1]))
