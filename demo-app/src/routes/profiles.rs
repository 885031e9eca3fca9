//! Profiles and following: `/api/profiles/{username}[/follow]`.

use axum::routing::{get, post};
use axum::Router;
use orm_core::{Load, Session, Tracked};

use crate::auth::{AuthUser, MaybeAuthUser};
use crate::entities::{Follow, User};
use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::json_writer::{JsonView, WriteJson};
use crate::loaders;
use crate::routes::idempotent::ensure_inserted;
use crate::state::AppState;
use crate::views::ProfileView;
use orm_core::axum::DbSession;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/profiles/{username}", get(profile))
        .route("/api/profiles/{username}/follow", post(follow).delete(unfollow))
}

/// `{"profile": ...}`.
struct ProfileResponse {
    profile: ProfileView,
}

impl WriteJson for ProfileResponse {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"profile\":");
        self.profile.write_json(out);
        out.push(b'}');
    }
}

/// The user with this name, or 404.
async fn find_profile(session: &mut Session, username: &str) -> ApiResult<Tracked<User>> {
    session.query::<User>().filter(User::USERNAME.eq(username)).first().await?.ok_or(ApiError::NotFound("profile"))
}

fn respond(user: User, following: bool) -> JsonView<ProfileResponse> {
    JsonView(ProfileResponse { profile: ProfileView { user, following } })
}

/// `GET /api/profiles/{username}`.
async fn profile(
    viewer: MaybeAuthUser,
    mut db: DbSession,
    Path(username): Path<String>,
) -> ApiResult<JsonView<ProfileResponse>> {
    // The profile, the viewer's follow of it (through its user name, in
    // the database) and the viewer's own row (which the session
    // middleware checks): one round trip. The profile is only shown, so
    // the session does not track it.
    let user = db.query::<User>().filter(User::USERNAME.eq(&username)).limit(1).untracked().all_later();
    let follows = match viewer.id() {
        Some(viewer) => db
            .query::<Follow>()
            .filter(Follow::FOLLOWER_ID.eq(viewer))
            .filter(Follow::FOLLOWEE.has(User::USERNAME.eq(&username)))
            .all_later(),
        None => Load::ready(Vec::new()),
    };
    let (mut user, follows, _) = db.load_together((user, follows, loaders::viewer(viewer.id()))).await?;
    let user = user.pop().ok_or(ApiError::NotFound("profile"))?;
    Ok(respond(user, !follows.is_empty()))
}

/// `POST /api/profiles/{username}/follow`: idempotent, also when requests
/// race (see `idempotent`).
async fn follow(
    auth: AuthUser,
    mut db: DbSession,
    Path(username): Path<String>,
) -> ApiResult<JsonView<ProfileResponse>> {
    let user = find_profile(&mut db, &username).await?;
    let key = (auth.id, user.read().id);
    if db.get::<Follow>(key).await?.is_none() {
        let follow = db.add(Follow { follower_id: key.0, followee_id: key.1 });
        ensure_inserted(&mut db, &follow).await?;
    }
    let user = user.read().clone();
    Ok(respond(user, true))
}

/// `DELETE /api/profiles/{username}/follow`: idempotent, also when requests
/// race (deleting a row that is gone already is no error).
async fn unfollow(
    auth: AuthUser,
    mut db: DbSession,
    Path(username): Path<String>,
) -> ApiResult<JsonView<ProfileResponse>> {
    let user = find_profile(&mut db, &username).await?;
    let user_id = user.read().id;
    if let Some(follow) = db.get::<Follow>((auth.id, user_id)).await? {
        db.delete(&follow)?;
    }
    let user = user.read().clone();
    Ok(respond(user, false))
}
