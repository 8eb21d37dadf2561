"""The itinerary as an iCalendar file, and the signed, expiring URL that serves it.

The browser downloads the file without our headers, so the URL carries its own proof:
a signature over its purpose, the thread, the itinerary item and the owner, valid for
`CALENDAR_TTL` seconds. A changed part or a passed expiry is refused.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode

from icalendar import Calendar, Event

from .itinerary import SLOTS, Itinerary
from .signing import Signer

PURPOSE = "calendar"
CALENDAR_TTL = 24 * 3600
CALENDAR_PATH = "/calendar"


def calendar_url(signer: Signer, base_url: str, thread_id: str, item_id: str, user_id: str) -> str:
    """An absolute URL for the itinerary `item_id`'s calendar file, for `user_id` only."""
    expires, signature = signer.sign(PURPOSE, thread_id, item_id, user_id, ttl=CALENDAR_TTL)
    query = urlencode({"user": user_id, "expires": expires, "signature": signature})
    path = f"{CALENDAR_PATH}/{quote(thread_id, safe='')}/{quote(item_id, safe='')}.ics"
    return f"{base_url.rstrip('/')}{path}?{query}"


def verify_calendar_url(
    signer: Signer, thread_id: str, item_id: str, user_id: str, expires: str, signature: str
) -> bool:
    """True when the URL's signature is this one's and has not expired."""
    return signer.verify(PURPOSE, thread_id, item_id, user_id, expires=expires, signature=signature)


def to_ics(itinerary: Itinerary, uid_prefix: str) -> bytes:
    """One all-day event per day, its three slots (and what is booked) in the description."""
    calendar = Calendar()
    calendar.add("prodid", "-//tripchat//itinerary//EN")
    calendar.add("version", "2.0")
    calendar.add("x-wr-calname", f"Trip to {itinerary.destination}")
    stamp = datetime.now(UTC)
    for number, day in enumerate(itinerary.days, 1):
        event = Event()
        event.add("uid", f"{uid_prefix}-day{number}@tripchat")
        event.add("dtstamp", stamp)
        event.add("dtstart", day.date)
        event.add("dtend", day.date + timedelta(days=1))
        event.add("summary", f"{itinerary.destination}, day {number}: {day.morning.text}")
        lines = [
            f"{name.capitalize()}: {day.slot(name).text}"
            + (" (booked)" if day.slot(name).booked else "")
            for name in SLOTS
        ]
        if day.travel:
            lines.append(f"Travel: {day.travel}")
        event.add("description", "\n".join(lines))
        event.add("location", itinerary.destination)
        calendar.add_component(event)
    return bytes(calendar.to_ical())
