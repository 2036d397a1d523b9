//! The web console of SPEC 9: its embedded assets at `/`, and the endpoints
//! only the console needs.

use std::sync::Arc;

use http::StatusCode;
use serde_json::json;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::http::{App, json_reply};

/// The console's routes. `admin` passes only requests with the admin token
/// (when one is configured).
pub fn routes(app: Arc<App>, admin: BoxedFilter<(Arc<App>,)>) -> BoxedFilter<(Response,)> {
    let _ = admin;
    let config = warp::path!("console" / "config").and(warp::get()).map(move || {
        json_reply(
            StatusCode::OK,
            &json!({
                "admin_token_required": app.admin_token.is_some(),
                "allow_rule_edits": app.allow_rule_edits,
            }),
        )
    });
    config.boxed()
}
