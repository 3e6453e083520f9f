//! Turning a log message back into raw events, and saying why what cannot be one is poison.
//! Pure, so the poison cases are unit-tested; the loader sends poison to the dead-letter
//! topic and loads the rest of the message.

use serde_json::value::RawValue;
use sightline_core::event::RawEvent;
use sightline_core::spec::Tenant;

use crate::kafka::Envelope;

/// What one message held.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    pub events: Vec<RawEvent>,
    pub poison: Vec<Poison>,
    /// The ids the client chose (a retry repeats them).
    pub client_ids: Vec<uuid::Uuid>,
}

/// Something that cannot be loaded: the whole message, or one event of it.
#[derive(Debug, PartialEq)]
pub struct Poison {
    /// The event's position in the message; `None` when the message itself is unreadable.
    pub index: Option<usize>,
    /// What goes to the dead-letter topic: the message, or the one event as JSON.
    pub payload: Vec<u8>,
    pub reason: String,
}

/// The events of a message (an `Envelope`), each checked on its own: one bad event never
/// sinks the others.
pub fn decode(payload: Option<&[u8]>, tenant: &Tenant) -> Decoded {
    let whole = |reason: String| Decoded {
        events: Vec::new(),
        client_ids: Vec::new(),
        poison: vec![Poison {
            index: None,
            payload: payload.unwrap_or_default().to_vec(),
            reason,
        }],
    };
    let Some(bytes) = payload else {
        return whole("empty message: no payload".into());
    };
    // Events stay raw JSON text until each is read on its own: one pass over the bytes, and a
    // bad event's dead letter is exactly what was sent.
    let envelope: Envelope<&RawValue> = match serde_json::from_slice(bytes) {
        Ok(e) => e,
        Err(e) => return whole(format!("not a Sightline message (an object with an events array): {e}")),
    };
    let mut decoded = Decoded {
        client_ids: envelope.client_ids,
        ..Decoded::default()
    };
    for (index, text) in envelope.events.into_iter().enumerate() {
        match event(text, tenant) {
            Ok(raw) => decoded.events.push(raw),
            Err(reason) => decoded.poison.push(Poison {
                index: Some(index),
                payload: text.get().as_bytes().to_vec(),
                reason: format!("event {index}: {reason}"),
            }),
        }
    }
    decoded
}

fn event(text: &RawValue, tenant: &Tenant) -> Result<RawEvent, String> {
    let event: RawEvent = serde_json::from_str(text.get()).map_err(|e| format!("not a Sightline raw event: {e}"))?;
    if event.event_id.is_nil() || event.event_id.is_max() {
        return Err("event_id is the nil or max UUID, which cannot identify one event".into());
    }
    // Whether the site is on the tenant's list is the collector's decision (it verified a
    // token signed for the site), not the loader's: tenants files are reloaded by each role
    // on its own, so a loader may not know a site a collector just took (or still know one
    // just removed), and an event acknowledged with 202 must be stored. Only a malformed id
    // is refused here.
    if !sightline_core::spec::valid_site_id(&event.site_id) {
        return Err(format!(
            "site {:?} of tenant {} is not a well-formed site id",
            event.site_id, tenant.name
        ));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use sightline_core::spec::parse_tenants;
    use std::collections::BTreeMap;

    fn tenant() -> Tenant {
        parse_tenants(
            "apiVersion: sightline.dev/v1alpha1\nkind: AnalyticsTenant\nmetadata: {name: acme}\nspec: {sites: {allowed: [{id: shop.example.com}]}}\n",
            "test",
        )
        .unwrap()
        .remove(0)
    }

    fn event(site: &str) -> RawEvent {
        // Millisecond precision, as events are stored.
        let now = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
        RawEvent {
            event_id: uuid::Uuid::new_v4(),
            site_id: site.into(),
            received_at: now,
            ts: now,
            name: "pageview".into(),
            url: format!("https://{site}/"),
            referrer: String::new(),
            user_agent: "ua".into(),
            props: BTreeMap::new(),
            revenue_amount: String::new(),
            revenue_currency: String::new(),
            visitor_id: 7,
            country: String::new(),
            ingest_source: "web".into(),
            prev_day_visitor_id: 0,
            interactive: true,
        }
    }

    fn message(events: &[serde_json::Value]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "events": events })).unwrap()
    }

    #[test]
    fn a_produced_message_decodes_to_its_events() {
        let events = vec![event("shop.example.com"), event("shop.example.com")];
        let client_ids = vec![events[1].event_id];
        let bytes = serde_json::to_vec(&Envelope {
            events: events.clone(),
            client_ids: client_ids.clone(),
        })
        .unwrap();
        assert_eq!(
            decode(Some(&bytes), &tenant()),
            Decoded {
                events,
                poison: vec![],
                client_ids
            }
        );
    }

    #[test]
    fn an_unreadable_message_is_poison_whole() {
        let t = tenant();
        let empty = decode(None, &t);
        assert!(empty.events.is_empty() && empty.poison[0].reason.contains("empty"));
        let junk = decode(Some(b"{not json"), &t);
        assert_eq!(junk.poison.len(), 1);
        assert_eq!(junk.poison[0].index, None);
        assert_eq!(junk.poison[0].payload, b"{not json");
        assert!(junk.poison[0].reason.contains("events array"));
    }

    #[test]
    fn one_bad_event_is_poison_and_the_others_load() {
        let good = event("shop.example.com");
        let mut nil = event("shop.example.com");
        nil.event_id = uuid::Uuid::nil();
        let bytes = message(&[
            serde_json::json!({"event_id": "x"}),
            serde_json::to_value(&good).unwrap(),
            serde_json::to_value(event("bad site!")).unwrap(),
            serde_json::to_value(&nil).unwrap(),
        ]);
        let d = decode(Some(&bytes), &tenant());
        assert_eq!(d.events, vec![good]);
        let reasons: Vec<(Option<usize>, &str)> = d.poison.iter().map(|p| (p.index, p.reason.as_str())).collect();
        assert_eq!(reasons.len(), 3);
        assert!(
            reasons[0].0 == Some(0) && reasons[0].1.contains("raw event"),
            "{reasons:?}"
        );
        assert!(
            reasons[1].0 == Some(2) && reasons[1].1.contains("bad site!"),
            "{reasons:?}"
        );
        assert!(reasons[2].0 == Some(3) && reasons[2].1.contains("nil"), "{reasons:?}");
        assert_eq!(d.poison[0].payload, br#"{"event_id":"x"}"#);
    }

    #[test]
    fn a_site_the_loader_does_not_know_yet_is_stored() {
        // The collector took it under a tenants file this loader has not reloaded yet.
        let newer = event("new.example.com");
        let d = decode(Some(&message(&[serde_json::to_value(&newer).unwrap()])), &tenant());
        assert_eq!(d.events, vec![newer]);
        assert!(d.poison.is_empty());
    }
}
