//! Registration, login, and the current user: `/api/users`, `/api/users/login`
//! and `/api/user`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use orm_core::Session;
use serde::{Deserialize, Serialize};

use crate::auth::AuthUser;
use crate::entities::User;
use crate::error::{ApiError, ApiResult};
use crate::json::{limit, require, require_patch, Patch, Valid, Validate};
use crate::password;
use crate::state::AppState;
use crate::views::UserView;
use orm_core::axum::DbSession;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/users", post(register))
        .route("/api/users/login", post(login))
        .route("/api/user", get(current).put(update))
}

/// NIST SP 800-63B: at least 8 characters, and at least 64 must be accepted.
const PASSWORD_MIN: usize = 8;
const PASSWORD_MAX: usize = 256;
/// User names are unique (indexed) and appear in URLs: 64 characters is
/// plenty, and at most 256 bytes of UTF-8, far below the index's limit.
pub const USERNAME_MAX: usize = 64;
/// RFC 5321 allows no longer address (a path of 256 octets, less `<>`).
pub const EMAIL_MAX: usize = 254;

#[derive(Serialize)]
struct UserResponse {
    user: UserView,
}

#[derive(Deserialize)]
struct RegisterRequest {
    user: NewUser,
}

#[derive(Deserialize)]
struct NewUser {
    #[serde(default)]
    username: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

impl Validate for RegisterRequest {
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        require(&mut problems, "username", &self.user.username);
        limit(&mut problems, "username", &self.user.username, USERNAME_MAX);
        require(&mut problems, "email", &self.user.email);
        check_email(&mut problems, &self.user.email);
        require(&mut problems, "password", &self.user.password);
        check_password(&mut problems, &self.user.password);
        problems
    }
}

fn check_email(problems: &mut Vec<(&'static str, String)>, email: &str) {
    if !email.trim().is_empty() && !email.contains('@') {
        problems.push(("email", "is invalid".to_owned()));
    }
    limit(problems, "email", email, EMAIL_MAX);
}

fn check_password(problems: &mut Vec<(&'static str, String)>, password: &str) {
    let length = password.chars().count();
    if length > 0 && length < PASSWORD_MIN {
        problems.push(("password", format!("is too short (minimum is {PASSWORD_MIN} characters)")));
    } else if length > PASSWORD_MAX {
        problems.push(("password", format!("is too long (maximum is {PASSWORD_MAX} characters)")));
    }
}

/// `POST /api/users`: 201 with the new user and a token; 409 if the user
/// name or e-mail address is taken.
async fn register(
    State(state): State<AppState>,
    mut db: DbSession,
    Valid(request): Valid<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<UserResponse>)> {
    let NewUser { username, email, password } = request.user;
    // Before the first statement, so no connection waits on the hash.
    let password_hash = password::hash(password).await?;
    let user = db.add(User {
        id: 0,
        username: username.trim().to_owned(),
        email: email.trim().to_owned(),
        password_hash,
        bio: None,
        image: None,
    });
    flush_unique(&mut db).await?;
    let token = state.jwt.issue(user.read().id)?;
    let view = UserView::new(&user.read(), token);
    Ok((StatusCode::CREATED, Json(UserResponse { user: view })))
}

/// Flushes, turning a taken user name or e-mail address into a 409 that
/// names the field.
async fn flush_unique(session: &mut Session) -> ApiResult<()> {
    session.flush().await.map_err(|error| match &error {
        orm_core::Error::UniqueViolation { constraint: Some(name), .. } if name == "users_username_unique" => {
            ApiError::Taken("username")
        }
        orm_core::Error::UniqueViolation { constraint: Some(name), .. } if name == "users_email_unique" => {
            ApiError::Taken("email")
        }
        _ => ApiError::from(error),
    })
}

#[derive(Deserialize)]
struct LoginRequest {
    user: Credentials,
}

#[derive(Deserialize)]
struct Credentials {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

impl Validate for LoginRequest {
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        require(&mut problems, "email", &self.user.email);
        require(&mut problems, "password", &self.user.password);
        problems
    }
}

/// `POST /api/users/login`: 200 with the user and a fresh token; 401 for an
/// unknown e-mail address or a wrong password, alike.
async fn login(
    State(state): State<AppState>,
    mut db: DbSession,
    Valid(request): Valid<LoginRequest>,
) -> ApiResult<Json<UserResponse>> {
    let Credentials { email, password } = request.user;
    let user = db.query::<User>().filter(User::EMAIL.eq(email.trim())).first().await?;
    let stored = user.as_ref().map(|user| user.read().password_hash.clone());
    if !password::verify(password, stored).await? {
        return Err(ApiError::InvalidCredentials);
    }
    let user = user.ok_or(ApiError::InvalidCredentials)?;
    let token = state.jwt.issue(user.read().id)?;
    let view = UserView::new(&user.read(), token);
    Ok(Json(UserResponse { user: view }))
}

/// The user a valid token names; a token for a user that no longer exists
/// is invalid.
async fn load_current(session: &mut Session, auth: &AuthUser) -> ApiResult<orm_core::Tracked<User>> {
    session.get::<User>(auth.id).await?.ok_or(ApiError::InvalidToken)
}

/// `GET /api/user`.
async fn current(auth: AuthUser, mut db: DbSession) -> ApiResult<Json<UserResponse>> {
    let user = load_current(&mut db, &auth).await?;
    let view = UserView::new(&user.read(), auth.token);
    Ok(Json(UserResponse { user: view }))
}

#[derive(Deserialize)]
struct UpdateRequest {
    user: UserChanges,
}

#[derive(Deserialize)]
struct UserChanges {
    #[serde(default)]
    username: Patch<String>,
    #[serde(default)]
    email: Patch<String>,
    #[serde(default)]
    password: Patch<String>,
    #[serde(default)]
    bio: Patch<String>,
    #[serde(default)]
    image: Patch<String>,
}

impl Validate for UpdateRequest {
    fn problems(&self) -> Vec<(&'static str, String)> {
        let changes = &self.user;
        let mut problems = Vec::new();
        require_patch(&mut problems, "username", &changes.username);
        if let Patch::Value(username) = &changes.username {
            limit(&mut problems, "username", username, USERNAME_MAX);
        }
        require_patch(&mut problems, "email", &changes.email);
        if let Patch::Value(email) = &changes.email {
            check_email(&mut problems, email);
        }
        require_patch(&mut problems, "password", &changes.password);
        if let Patch::Value(password) = &changes.password {
            check_password(&mut problems, password);
        }
        problems
    }
}

/// Applies a patch to an optional text field: `null` and `""` both clear it.
fn patch_optional(field: &mut Option<String>, patch: Patch<String>) {
    match patch {
        Patch::Absent => {}
        Patch::Null => *field = None,
        Patch::Value(text) => *field = Some(text).filter(|text| !text.trim().is_empty()),
    }
}

/// `PUT /api/user`: changes the given fields; 409 if the new user name or
/// e-mail address is taken.
async fn update(
    auth: AuthUser,
    mut db: DbSession,
    Valid(request): Valid<UpdateRequest>,
) -> ApiResult<Json<UserResponse>> {
    let changes = request.user;
    let password_hash = match changes.password {
        Patch::Value(password) => Some(password::hash(password).await?),
        Patch::Absent | Patch::Null => None,
    };
    let user = load_current(&mut db, &auth).await?;
    {
        let mut user = user.write();
        if let Patch::Value(username) = changes.username {
            username.trim().clone_into(&mut user.username);
        }
        if let Patch::Value(email) = changes.email {
            email.trim().clone_into(&mut user.email);
        }
        if let Some(hash) = password_hash {
            user.password_hash = hash;
        }
        patch_optional(&mut user.bio, changes.bio);
        patch_optional(&mut user.image, changes.image);
    }
    flush_unique(&mut db).await?;
    let view = UserView::new(&user.read(), auth.token);
    Ok(Json(UserResponse { user: view }))
}
