"""The station's display: where POST /api/lcd and D-Bus ShowMessage put a message.

``show()`` answers with the text actually shown (QIoT's app echoed back
something else).  Drivers: ``log`` (a log line), ``file`` (the message
replaces ``path`` atomically, for a kiosk or a status page to pick up),
``dbus`` (a MessageShown signal for a display process on the bus),
``st7735`` (the Enviro+ 0.96" LCD, when its library is installed).
"""

from collections.abc import Callable, Mapping

from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from stationd.filestore import replace_file

log = Logger()


class MessageTooLong(ValueError):
    pass


def _printable(message):
    """Control characters (but newlines) become spaces: what a display can show."""
    return "".join(c if c == "\n" or c.isprintable() else " " for c in message)


class Display:
    """The [display] section's display.  The ``dbus`` driver's messages go to
    ``shown_listeners`` (f(text): NodeBus.message_shown, which signals them)."""

    def __init__(self, config: Mapping):
        self.driver = config["driver"]
        self.path = config["path"]
        self.max_length = config["max_length"]
        self.shown_listeners: list[Callable[[str], object]] = []
        self.message: str | None = None
        self._lcd = _St7735() if self.driver == "st7735" else None

    async def show(self, message: str) -> str:
        if len(message) > self.max_length:
            raise MessageTooLong(f"the message has {len(message)} characters; the display takes "
                                 f"{self.max_length}")
        shown = _printable(message)
        if self.driver == "file":
            await deferToThread(replace_file, self.path, shown.encode("utf-8"))
        elif self.driver == "dbus":
            for listener in self.shown_listeners:
                listener(shown)
        elif self._lcd is not None:
            await deferToThread(self._lcd.show, shown)
        log.info("Display: {message!r}", message=shown)
        self.message = shown
        return shown


class _St7735:
    """The Enviro+ LCD (160x80), through Pimoroni's st7735 library and Pillow."""

    def __init__(self):
        try:
            try:
                import st7735
            except ImportError:
                import ST7735 as st7735  # noqa: N813 - the library's older name
            from PIL import Image, ImageDraw
        except ImportError as e:
            raise ValueError(f"display st7735 needs Pimoroni's st7735 library and Pillow ({e})") from None
        self.image_module, self.draw_module = Image, ImageDraw
        self.device = st7735.ST7735(port=0, cs=1, dc=9, backlight=12, rotation=270, spi_speed_hz=10_000_000)
        self.device.begin()

    def show(self, text):
        image = self.image_module.new("RGB", (self.device.width, self.device.height), color=(0, 0, 0))
        self.draw_module.Draw(image).multiline_text((2, 2), text, fill=(255, 255, 255))
        self.device.display(image)
