"""Salesforce Outbound Messages: SOAP 1.1 deliveries, unsigned, answered with one exact ack
(providers-addendum.md 3.1).

A message holds up to 100 ``<Notification>``s of one org (``OrganizationId``), each with its
own ``Id`` — the key Salesforce's retries (for up to 24 hours, out of order, duplicated) keep —
and the sObject's fields as they are *now*. It is untrusted XML: parsed with ``defusedxml``
(no DTDs, no entities, no external references: an XML bomb is refused, not expanded), and
anything that is not an Outbound Message is a :class:`BadMessage`. The ``SessionId`` a
workflow may send is never read into anything kept.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import attrs

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
#: The answer Salesforce needs, byte for byte as the addendum gives it; anything else (another
#: element, ``Ack`` false, a non-200) is a failed delivery, retried for 24 hours.
ACK = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">\n'
    " <soapenv:Body>\n"
    '  <notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
    "<Ack>true</Ack></notificationsResponse>\n"
    " </soapenv:Body>\n"
    "</soapenv:Envelope>\n"
)
ACK_CONTENT_TYPE = "text/xml; charset=utf-8"
MAX_NOTIFICATIONS = 100
MAX_FIELDS = 500
#: An org, action, notification or record id (15 or 18 characters).
SF_ID = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?", re.ASCII)
_TYPE = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_.-]*:)?([A-Za-z][A-Za-z0-9_]{0,79})", re.ASCII)


class BadMessage(ValueError):
    """A body that is not a readable, safe Outbound Message (the reason says why)."""


@attrs.frozen
class Notification:
    #: The notification's own id: what a redelivery keeps.
    id: str
    #: The sObject type (``Account``), from ``xsi:type="sf:Account"``.
    sobject_type: str
    #: The record's id (``sf:Id``), if sent.
    object_id: str | None
    #: The fields sent, by name (without namespace); ``xsi:nil`` fields are None.
    fields: dict[str, Any]


@attrs.frozen
class OutboundMessage:
    organization_id: str | None
    action_id: str | None
    enterprise_url: str | None
    partner_url: str | None
    notifications: tuple[Notification, ...]


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _ns(tag: Any) -> str:
    return tag[1:].split("}", 1)[0] if isinstance(tag, str) and tag.startswith("{") else ""


def _nil(element: Any) -> bool:
    return (element.get(f"{{{XSI_NS}}}nil") or "").strip().lower() == "true"


def _text(element: Any) -> str | None:
    if element is None or _nil(element):
        return None
    return (element.text or "").strip()


def _id(value: str | None, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not SF_ID.fullmatch(value):
        raise BadMessage(f"{what} is not a Salesforce id")
    return value


def _value(element: Any, depth: int) -> Any:
    """A field: its text, None for ``xsi:nil``, or — for a related record — its fields."""
    if _nil(element):
        return None
    children = list(element)
    if not children or depth >= 3:
        return (element.text or "").strip()
    return {_local(c.tag): _value(c, depth + 1) for c in children[:MAX_FIELDS]}


def parse(body: bytes) -> OutboundMessage:
    """The message in ``body``; :class:`BadMessage` for anything else — malformed XML, a
    DTD or entity declaration (XML bombs), another SOAP body, more than 100 notifications."""
    from xml.etree.ElementTree import ParseError

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    if not isinstance(body, bytes) or not body.strip():
        raise BadMessage("empty body")
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise BadMessage(f"refused XML: {type(exc).__name__}") from None
    except (ParseError, ValueError, UnicodeError, RecursionError) as exc:
        raise BadMessage(f"not well-formed XML ({type(exc).__name__})") from None
    if (_ns(root.tag), _local(root.tag)) != (SOAP_NS, "Envelope"):
        raise BadMessage("not a SOAP 1.1 envelope")
    bodies = [c for c in root if (_ns(c.tag), _local(c.tag)) == (SOAP_NS, "Body")]
    if len(bodies) != 1:
        raise BadMessage("the envelope has no single Body")
    found = [c for c in bodies[0] if (_ns(c.tag), _local(c.tag)) == (OUTBOUND_NS,
                                                                       "notifications")]
    if len(found) != 1:
        raise BadMessage("the Body holds no Outbound Message <notifications>")
    message = found[0]

    def first(name: str) -> Any:
        return message.find(f"{{{OUTBOUND_NS}}}{name}")

    items = message.findall(f"{{{OUTBOUND_NS}}}Notification")
    if len(items) > MAX_NOTIFICATIONS:
        raise BadMessage(f"{len(items)} notifications; Salesforce sends at most "
                         f"{MAX_NOTIFICATIONS}")
    notifications = []
    for item in items:
        nid = _id(_text(item.find(f"{{{OUTBOUND_NS}}}Id")), "a notification Id")
        record = item.find(f"{{{OUTBOUND_NS}}}sObject")
        if nid is None or record is None:
            raise BadMessage("a Notification without its Id or sObject")
        kind = _TYPE.fullmatch((record.get(f"{{{XSI_NS}}}type") or "").strip())
        if kind is None:
            raise BadMessage("an sObject without a readable xsi:type")
        values = {_local(c.tag): _value(c, 1) for c in list(record)[:MAX_FIELDS]}
        object_id = values.get("Id")
        notifications.append(Notification(
            id=nid, sobject_type=kind.group(1), fields=values,
            object_id=_id(object_id, "an sObject Id") if isinstance(object_id, str) else None))
    return OutboundMessage(
        organization_id=_id(_text(first("OrganizationId")), "OrganizationId"),
        action_id=_id(_text(first("ActionId")), "ActionId"),
        enterprise_url=_text(first("EnterpriseUrl")), partner_url=_text(first("PartnerUrl")),
        notifications=tuple(notifications))


def routing(message: OutboundMessage) -> list[dict[str, Any]]:
    """What the ingress routes and dedupes by: one entry per notification, with the org id
    (``OrganizationId``) and the notification id (``Id``)."""
    return [{"OrganizationId": message.organization_id, "Id": n.id,
             "sObject": n.sobject_type, "ObjectId": n.object_id}
            for n in message.notifications]


def occurred_at(fields: dict[str, Any]) -> datetime | None:
    from nexus_salesforce.soql import parse_datetime

    for name in ("SystemModstamp", "LastModifiedDate", "CreatedDate"):
        at = parse_datetime(fields.get(name))
        if at is not None:
            return at
    return None


def is_ack(status: int, body: bytes) -> bool:
    """Whether an answer acknowledges a message as Salesforce requires: HTTP 200 and a SOAP
    Body holding ``notificationsResponse`` (outbound namespace) with ``Ack`` true — not
    ``<notifications>``, as some receivers answer (addendum 3.1). The simulator's judge."""
    if status != 200:
        return False
    try:
        message = _ack_response(body)
    except BadMessage:
        return False
    ack = message.find(f"{{{OUTBOUND_NS}}}Ack")
    return ack is not None and (ack.text or "").strip() == "true"


def _ack_response(body: bytes) -> Any:
    from xml.etree.ElementTree import ParseError

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (DefusedXmlException, ParseError, ValueError, UnicodeError, RecursionError):
        raise BadMessage("unreadable") from None
    if (_ns(root.tag), _local(root.tag)) != (SOAP_NS, "Envelope"):
        raise BadMessage("not an envelope")
    for part in root:
        if (_ns(part.tag), _local(part.tag)) == (SOAP_NS, "Body"):
            for child in part:
                if (_ns(child.tag), _local(child.tag)) == (OUTBOUND_NS,
                                                           "notificationsResponse"):
                    return child
    raise BadMessage("no notificationsResponse")
