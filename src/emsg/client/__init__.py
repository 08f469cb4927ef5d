"""The EMSG client library: `Client` and the values it returns."""

from emsg.client.client import Client
from emsg.client.errors import (
    DeviceNotApproved,
    NoProfile,
    NotLoggedIn,
    ProfileExists,
    ProfileTampered,
    WrongPassphrase,
)
from emsg.client.models import ClientEvent, ContactInfo, DeviceInfo, Message
from emsg.crypto.verification import ShortCode
from emsg.proto.wire import StrangerPolicy

__all__ = [
    "Client",
    "ClientEvent",
    "ContactInfo",
    "DeviceInfo",
    "DeviceNotApproved",
    "Message",
    "NoProfile",
    "NotLoggedIn",
    "ProfileExists",
    "ProfileTampered",
    "ShortCode",
    "StrangerPolicy",
    "WrongPassphrase",
]
