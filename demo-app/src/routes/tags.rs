//! `GET /api/tags`.

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::db_session::DbSession;
use crate::error::ApiResult;
use crate::state::AppState;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/tags", get(list))
}

#[derive(Serialize)]
struct TagsResponse {
    tags: Vec<String>,
}

/// Every tag in use, in alphabetical order.
async fn list(mut db: DbSession) -> ApiResult<Json<TagsResponse>> {
    // Raw SQL: DISTINCT is beyond the query builder, and loading every
    // article's tags to deduplicate them here would read a row per use.
    let rows = db.query_rows("SELECT DISTINCT tag FROM article_tags ORDER BY tag", &[]).await?;
    let tags = rows
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(|source| orm_core::Error::Decode { entity: "tag list", column: "tag", source })?;
    Ok(Json(TagsResponse { tags }))
}
