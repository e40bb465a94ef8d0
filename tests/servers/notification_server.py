#!/usr/bin/python3
"""A desktop notification server on the D-Bus session bus, for the real-window test.

It owns `org.freedesktop.Notifications` and implements the Desktop Notifications
Specification 1.2 (https://specifications.freedesktop.org/notification-spec/1.2/):
`Notify`, `CloseNotification`, `GetCapabilities`, `GetServerInformation`, and the
`NotificationClosed` signal. Each notification it receives is appended to `--log` as one
JSON line: {"app_name", "summary", "body", "id"}. It prints `ready` once it owns the name.

Run with Debian's python3 (python3-dbus, python3-gi): `/usr/bin/python3
tests/servers/notification_server.py --log notes.jsonl`, inside a session bus
(`dbus-run-session`).
"""

import argparse
import json
import sys

import dbus
import dbus.service
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

NAME = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"


class Notifications(dbus.service.Object):
    def __init__(self, bus, log):
        self._bus_name = dbus.service.BusName(NAME, bus, do_not_queue=True)
        super().__init__(bus, PATH)
        self._log = log
        self._next = 1

    @dbus.service.method(NAME, in_signature="susssasa{sv}i", out_signature="u")
    def Notify(self, app_name, replaces_id, app_icon, summary, body, actions, hints, timeout):
        nid = int(replaces_id) or self._next
        if not replaces_id:
            self._next += 1
        with open(self._log, "a", encoding="utf-8") as f:
            f.write(
                json.dumps(
                    {"app_name": str(app_name), "summary": str(summary), "body": str(body), "id": nid}
                )
                + "\n"
            )
        return dbus.UInt32(nid)

    @dbus.service.method(NAME, in_signature="u", out_signature="")
    def CloseNotification(self, nid):
        # Reason 3: closed by a call to CloseNotification.
        self.NotificationClosed(nid, dbus.UInt32(3))

    @dbus.service.method(NAME, in_signature="", out_signature="as")
    def GetCapabilities(self):
        return ["body"]

    @dbus.service.method(NAME, in_signature="", out_signature="ssss")
    def GetServerInformation(self):
        return ("nexus-test-notifications", "nexus", "1.0", "1.2")

    @dbus.service.signal(NAME, signature="uu")
    def NotificationClosed(self, nid, reason):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", required=True, help="file that gets one JSON line per notification")
    args = parser.parse_args()
    DBusGMainLoop(set_as_default=True)
    bus = dbus.SessionBus()
    try:
        _server = Notifications(bus, args.log)
    except dbus.exceptions.NameExistsException:
        print(f"{NAME} is already owned on this session bus", file=sys.stderr)
        sys.exit(1)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
