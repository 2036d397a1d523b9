//! Listing, requeueing and discarding deliveries and reading their
//! attempts (SPEC 4, 5, 10): `GET /deliveries`, `POST
//! /deliveries/{id}/retry`, `POST /deliveries/retry-dead`, `GET
//! /deliveries/{id}/attempts`, `DELETE /deliveries?destination=`, the
//! console's Deliveries page and `leadscore deliveries`.

use crate::app::AppError;
use crate::store::{AttemptInfo, DeliveryFilter, DeliveryInfo, DeliveryStatus, Requeue, Store};

/// Most deliveries one listing answers.
pub const MAX_LIST: usize = 1000;
/// Deliveries listed when no limit is given.
pub const DEFAULT_LIST: usize = 100;

/// Which deliveries to list, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryQuery {
    pub status: Option<DeliveryStatus>,
    pub destination: Option<String>,
    pub limit: usize,
}

impl DeliveryQuery {
    pub fn new(status: Option<DeliveryStatus>, limit: usize) -> Result<Self, AppError> {
        if !(1..=MAX_LIST).contains(&limit) {
            return Err(AppError::parameter(
                "limit",
                format!("must be between 1 and {MAX_LIST}"),
            ));
        }
        Ok(Self {
            status,
            destination: None,
            limit,
        })
    }

    /// Only the deliveries of this destination.
    pub fn at(mut self, destination: Option<&str>) -> Result<Self, AppError> {
        self.destination = destination_param(destination)?.map(str::to_owned);
        Ok(self)
    }

    /// From query parameters as sent (`status=dead&limit=50`).
    pub fn from_params(status: Option<&str>, limit: Option<&str>) -> Result<Self, AppError> {
        let status = match status.map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(DeliveryStatus::parse(text).ok_or_else(|| {
                AppError::parameter(
                    "status",
                    format!("unknown status {text:?}; use pending, dead, delivered or skipped"),
                )
            })?),
        };
        let limit = match limit {
            None => DEFAULT_LIST,
            Some(text) => parse_count("limit", text)?,
        };
        Self::new(status, limit)
    }
}

/// A whole number parameter; anything else (negative, fractional, too
/// large for any limit) is refused with its name.
pub fn parse_count(name: &str, text: &str) -> Result<usize, AppError> {
    text.trim()
        .parse::<u32>()
        .map(|n| n as usize)
        .map_err(|_| AppError::parameter(name, format!("{text:?} is not a whole number in range")))
}

/// A `destination=` parameter: absent or empty is every destination; a
/// name is checked for the shape destination names have (SPEC 10), so a
/// typo is a clear `400`, not an empty answer.
pub fn destination_param(destination: Option<&str>) -> Result<Option<&str>, AppError> {
    match destination.map(str::trim) {
        None | Some("") => Ok(None),
        Some(name)
            if name.len() <= 40
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') =>
        {
            Ok(Some(name))
        }
        Some(name) => Err(AppError::parameter(
            "destination",
            format!("{name:?} is not a destination name ([a-z0-9_-], at most 40)"),
        )),
    }
}

pub async fn list(store: &dyn Store, query: DeliveryQuery) -> Result<Vec<DeliveryInfo>, AppError> {
    let filter = DeliveryFilter {
        status: query.status,
        destination: query.destination,
    };
    Ok(store.list_deliveries(filter, query.limit).await?)
}

/// Requeues an event's dead deliveries (at one destination, or all): how
/// many, `0` when they exist but none is dead.
pub async fn requeue(store: &dyn Store, id: &str, destination: Option<&str>) -> Result<u64, AppError> {
    match store.requeue(id, destination).await? {
        Requeue::Requeued => Ok(1),
        Requeue::NotDead => Ok(0),
        Requeue::Unknown => Err(no_delivery(id, destination)),
    }
}

/// Requeues every dead delivery (of one destination, or all); how many.
pub async fn requeue_dead(store: &dyn Store, destination: Option<&str>) -> Result<u64, AppError> {
    Ok(store.requeue_dead(destination).await?)
}

/// An event's attempts, oldest first.
pub async fn attempts(
    store: &dyn Store,
    id: &str,
    destination: Option<&str>,
) -> Result<Vec<AttemptInfo>, AppError> {
    store
        .attempts(id, destination)
        .await?
        .ok_or_else(|| no_delivery(id, destination))
}

/// Deletes the pending and dead deliveries of a destination; how many.
pub async fn discard(store: &dyn Store, destination: Option<&str>) -> Result<u64, AppError> {
    let Some(destination) = destination_param(destination)? else {
        return Err(AppError::parameter(
            "destination",
            "is required: the destination whose pending and dead deliveries to discard",
        ));
    };
    Ok(store.discard_deliveries(destination).await?)
}

fn no_delivery(id: &str, destination: Option<&str>) -> AppError {
    match destination {
        Some(d) => AppError::NotFound(format!("no delivery with id {id:?} to destination {d:?}")),
        None => AppError::NotFound(format!("no delivery with id {id:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_validated_and_named() {
        assert_eq!(
            DeliveryQuery::from_params(Some("dead"), Some("5")).unwrap(),
            DeliveryQuery {
                status: Some(DeliveryStatus::Dead),
                destination: None,
                limit: 5
            }
        );
        assert_eq!(
            DeliveryQuery::from_params(None, None).unwrap().limit,
            DEFAULT_LIST
        );
        for (status, limit, named) in [
            (Some("lost"), None, "status"),
            (None, Some("0"), "limit"),
            (None, Some("1001"), "limit"),
            (None, Some("-1"), "limit"),
            (None, Some("18446744073709551616"), "limit"),
            (None, Some("2.5"), "limit"),
        ] {
            let message = DeliveryQuery::from_params(status, limit).unwrap_err().to_string();
            assert!(message.starts_with(named), "{message}");
        }
    }
}
