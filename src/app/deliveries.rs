//! Listing and requeueing deliveries (SPEC 4, 5): `GET /deliveries`,
//! `POST /deliveries/{id}/retry`, `POST /deliveries/retry-dead`, the
//! console's Deliveries page and `leadscore deliveries`.

use crate::app::AppError;
use crate::store::{DeliveryInfo, DeliveryStatus, Requeue, Store};

/// Most deliveries one listing answers.
pub const MAX_LIST: usize = 1000;
/// Deliveries listed when no limit is given.
pub const DEFAULT_LIST: usize = 100;

/// Which deliveries to list, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryQuery {
    pub status: Option<DeliveryStatus>,
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
        Ok(Self { status, limit })
    }

    /// From query parameters as sent (`status=dead&limit=50`).
    pub fn from_params(status: Option<&str>, limit: Option<&str>) -> Result<Self, AppError> {
        let status = match status.map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(DeliveryStatus::parse(text).ok_or_else(|| {
                AppError::parameter(
                    "status",
                    format!("unknown status {text:?}; use pending, dead or delivered"),
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

pub async fn list(store: &dyn Store, query: DeliveryQuery) -> Result<Vec<DeliveryInfo>, AppError> {
    Ok(store.list_deliveries(query.status, query.limit).await?)
}

/// Requeues one dead delivery: `1`, or `0` when it exists but is not dead.
pub async fn requeue(store: &dyn Store, id: &str) -> Result<u64, AppError> {
    match store.requeue(id).await? {
        Requeue::Requeued => Ok(1),
        Requeue::NotDead => Ok(0),
        Requeue::Unknown => Err(AppError::NotFound(format!("no delivery with id {id:?}"))),
    }
}

/// Requeues every dead delivery; how many.
pub async fn requeue_dead(store: &dyn Store) -> Result<u64, AppError> {
    Ok(store.requeue_dead().await?)
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
