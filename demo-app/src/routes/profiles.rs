//! Profiles and following: `/api/profiles/{username}[/follow]`.

use axum::extract::Path;
use axum::routing::{get, post};
use axum::{Json, Router};
use orm_core::{Session, Tracked};
use serde::Serialize;

use crate::auth::{AuthUser, MaybeAuthUser};
use crate::db_session::DbSession;
use crate::entities::{Follow, User};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::views::ProfileView;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/profiles/{username}", get(profile))
        .route("/api/profiles/{username}/follow", post(follow).delete(unfollow))
}

#[derive(Serialize)]
struct ProfileResponse {
    profile: ProfileView,
}

/// The user with this name, or `None`.
pub async fn user_by_name(session: &mut Session, username: &str) -> orm_core::Result<Option<Tracked<User>>> {
    session.query::<User>().filter(User::USERNAME.eq(username)).first().await
}

async fn find_profile(session: &mut Session, username: &str) -> ApiResult<Tracked<User>> {
    user_by_name(session, username).await?.ok_or(ApiError::NotFound("profile"))
}

fn respond(user: &Tracked<User>, following: bool) -> Json<ProfileResponse> {
    Json(ProfileResponse { profile: ProfileView::new(&user.read(), following) })
}

/// `GET /api/profiles/{username}`.
async fn profile(
    viewer: MaybeAuthUser,
    mut db: DbSession,
    Path(username): Path<String>,
) -> ApiResult<Json<ProfileResponse>> {
    let user = find_profile(&mut db, &username).await?;
    let user_id = user.read().id;
    let following = match viewer.id() {
        Some(viewer) => db.get::<Follow>((viewer, user_id)).await?.is_some(),
        None => false,
    };
    Ok(respond(&user, following))
}

/// `POST /api/profiles/{username}/follow`: idempotent.
async fn follow(auth: AuthUser, mut db: DbSession, Path(username): Path<String>) -> ApiResult<Json<ProfileResponse>> {
    let user = find_profile(&mut db, &username).await?;
    let key = (auth.id, user.read().id);
    if db.get::<Follow>(key).await?.is_none() {
        db.add(Follow { follower_id: key.0, followee_id: key.1 });
    }
    Ok(respond(&user, true))
}

/// `DELETE /api/profiles/{username}/follow`: idempotent.
async fn unfollow(auth: AuthUser, mut db: DbSession, Path(username): Path<String>) -> ApiResult<Json<ProfileResponse>> {
    let user = find_profile(&mut db, &username).await?;
    let user_id = user.read().id;
    if let Some(follow) = db.get::<Follow>((auth.id, user_id)).await? {
        db.delete(&follow)?;
    }
    Ok(respond(&user, false))
}
