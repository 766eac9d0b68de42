//! Sent data, received data and the event log.

use std::time::Duration;

use tokio_postgres::Client;

use crate::book::events::Event;
use crate::book::records::{self, Filter, PacketRecord};
use crate::error::Result;
use crate::relay::Relay;

/// Packets of a record, oldest first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Packets {
    pub packets: Vec<PacketRecord>,
}

/// HO's record of the packets it sent ("sent data"), as `filter` selects.
/// With a site in `filter`, the packets it was a target of: `relay` says
/// since when the `*` packets are its (the site must be registered).
pub async fn sent(ho: &Client, relay: &Relay, filter: &Filter) -> Result<Packets> {
    let first_packet = match &filter.site {
        Some(site) => relay.first_packet(site).await?,
        None => 0,
    };
    Ok(Packets {
        packets: records::sent(ho, filter, first_packet).await?,
    })
}

/// This site's record of the packets it received ("received data").
pub async fn received(site: &Client, filter: &Filter) -> Result<Packets> {
    Ok(Packets {
        packets: records::received(site, filter).await?,
    })
}

/// Entries of an event log, oldest first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Events {
    pub events: Vec<Event>,
}

/// The event log of HO (`role` `ho`) or of this site (`pos`) for the last
/// `since`.
pub async fn events(client: &Client, role: &str, since: Duration) -> Result<Events> {
    Ok(Events {
        events: crate::book::events::since(client, since, role).await?,
    })
}
