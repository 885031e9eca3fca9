//! `GET /api/tags`.

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::entities::ArticleTag;
use crate::error::ApiResult;
use crate::state::AppState;
use orm_core::axum::DbSession;

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
    // Read from the index on the tag (`article_tags_tag`), one step per
    // distinct tag, rather than `SELECT DISTINCT` over every article's tags,
    // whose cost grows with the articles.
    let tags = db.query::<ArticleTag>().distinct_values(ArticleTag::TAG).await?;
    Ok(Json(TagsResponse { tags }))
}
