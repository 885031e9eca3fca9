//! Comments: `/api/articles/{slug}/comments[/{id}]`.

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use axum::Router;
use serde::Deserialize;

use crate::auth::{AuthUser, MaybeAuthUser};
use crate::entities::{now, Article, Comment};
use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::json::{require, Valid, Validate};
use crate::json_writer::{write_list, JsonView, WriteJson};
use crate::loaders;
use crate::routes::articles::find_article;
use crate::state::AppState;
use crate::views::{self, CommentView, WithAuthor};
use orm_core::axum::DbSession;
use orm_core::Tracked;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/articles/{slug}/comments", get(list).post(create))
        .route("/api/articles/{slug}/comments/{id}", delete(remove))
}

/// `{"comment": ...}`.
struct CommentResponse {
    comment: CommentView,
}

impl WriteJson for CommentResponse {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"comment\":");
        self.comment.write_json(out);
        out.push(b'}');
    }
}

/// `{"comments": [...]}`.
struct CommentsResponse {
    comments: Vec<CommentView>,
}

impl WriteJson for CommentsResponse {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"comments\":");
        write_list(out, &self.comments);
        out.push(b'}');
    }
}

/// `GET /api/articles/{slug}/comments`: oldest first; two round trips.
async fn list(
    viewer: MaybeAuthUser,
    mut db: DbSession,
    Path(slug): Path<String>,
) -> ApiResult<JsonView<CommentsResponse>> {
    // The article (for its 404) beside its comments with their authors (a
    // join), found through its slug in the database: one round trip. Ids
    // grow with time.
    let article = loaders::article_by_slug(&mut db, &slug);
    let comments = db
        .query::<Comment>()
        .filter(Comment::ARTICLE.has(Article::SLUG.eq(&slug)))
        .join(Comment::AUTHOR)
        .order_by(Comment::ID.asc())
        .all_later();
    let (article, comments): (Vec<Tracked<Article>>, Vec<WithAuthor<Comment>>) =
        db.load_together((article, comments)).await?;
    if article.is_empty() {
        return Err(ApiError::NotFound("article"));
    }
    let comments = views::comments(&mut db, comments, viewer.id()).await?;
    Ok(JsonView(CommentsResponse { comments }))
}

#[derive(Deserialize)]
struct CreateRequest {
    comment: NewComment,
}

#[derive(Deserialize)]
struct NewComment {
    #[serde(default)]
    body: String,
}

impl Validate for CreateRequest {
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        require(&mut problems, "body", &self.comment.body);
        problems
    }
}

/// `POST /api/articles/{slug}/comments`: 201 with the comment. Two
/// statements: the viewer's row, with whether they follow themselves (what
/// the comment's view shows of its author) and the article's id, then the
/// insert, which the commit sends alone, its own transaction; the view,
/// which shows the comment's generated id, is written after the commit and
/// needs no load of its own.
async fn create(
    auth: AuthUser,
    mut db: DbSession,
    Path(slug): Path<String>,
    Valid(request): Valid<CreateRequest>,
) -> ApiResult<impl IntoResponse> {
    let found = loaders::own_profile(&mut db, auth.id, Some(&slug)).await?;
    let (author, articles) = found.ok_or(ApiError::InvalidToken)?;
    auth.found_in_database();
    let article_id = *articles.first().ok_or(ApiError::NotFound("article"))?;
    let time = now();
    let comment = db.add(Comment {
        id: 0,
        article_id,
        author_id: auth.id,
        body: request.comment.body,
        created_at: time,
        updated_at: time,
    });
    // Inserted by the commit, one statement alone, needing no BEGIN or
    // COMMIT; the answer, which shows the comment's id, is written after it.
    let view = CommentView { comment, author };
    Ok(JsonView(CommentResponse { comment: view }).after_commit(StatusCode::CREATED))
}

/// `DELETE /api/articles/{slug}/comments/{id}`: 204; only by its author.
async fn remove(auth: AuthUser, mut db: DbSession, Path((slug, id)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let article = find_article(&mut db, &slug).await?;
    let article_id = article.read().id;
    let id: i64 = id.parse().map_err(|_| ApiError::NotFound("comment"))?;
    let comment = db
        .get::<Comment>(id)
        .await?
        .filter(|comment| comment.read().article_id == article_id)
        .ok_or(ApiError::NotFound("comment"))?;
    if comment.read().author_id != auth.id {
        return Err(ApiError::Forbidden("comment"));
    }
    db.delete(&comment)?;
    Ok(StatusCode::NO_CONTENT)
}
