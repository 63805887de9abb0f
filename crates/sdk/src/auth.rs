//! Accounts and sessions from the client side: registration, the two-step login, token refresh
//! (the refresh token rotates on every use), MFA enrollment, and the admin operations. A
//! [`Session`] attaches its access token to the calls made with it.

use caremesh_proto::auth::v1 as pb;
use caremesh_proto::auth::v1::auth_admin_service_client::AuthAdminServiceClient;
use caremesh_proto::auth::v1::auth_service_client::AuthServiceClient;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use crate::audit::time_of;
use crate::{Client, SdkError, ServiceName};

pub use pb::Role;

/// A signed-in session: what a client keeps between calls (carectl stores it per profile).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    pub user_id: String,
    pub role: String,
    pub session_id: String,
    /// 1: password only (may enroll MFA and manage the account); 2: with a second factor.
    pub aal: u8,
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub session_expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user_id", &self.user_id)
            .field("role", &self.role)
            .field("session_id", &self.session_id)
            .field("aal", &self.aal)
            .field("access_expires_at", &self.access_expires_at)
            .finish_non_exhaustive()
    }
}

impl Session {
    fn from_tokens(tokens: Option<pb::SessionTokens>) -> Result<Self, SdkError> {
        let tokens = tokens.ok_or(SdkError::Protocol("the server sent no tokens"))?;
        let time = |timestamp: Option<prost_types::Timestamp>| {
            timestamp
                .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
                .ok_or(SdkError::Protocol("the server sent tokens without expiry times"))
        };
        Ok(Self {
            aal: if tokens.aal() == pb::AssuranceLevel::Aal2 { 2 } else { 1 },
            role: role_name(tokens.role()).to_owned(),
            access_expires_at: time(tokens.access_token_expire_time)?,
            session_expires_at: time(tokens.session_expire_time)?,
            user_id: tokens.user_id,
            session_id: tokens.session_id,
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
        })
    }

    /// `message` as a request carrying this session's access token.
    pub fn request<T>(&self, message: T) -> Result<tonic::Request<T>, SdkError> {
        let mut request = tonic::Request::new(message);
        let value = format!("Bearer {}", self.access_token)
            .parse()
            .map_err(|_| SdkError::Protocol("the access token is not a valid header value"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }

    /// Whether the access token expires within `margin` (time to refresh).
    pub fn expires_within(&self, now: DateTime<Utc>, margin: chrono::TimeDelta) -> bool {
        self.access_expires_at - margin <= now
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Patient => "patient",
        Role::Doctor => "doctor",
        Role::Nurse => "nurse",
        Role::Admin => "admin",
        Role::Auditor => "auditor",
        Role::Unspecified => "unspecified",
    }
}

pub fn parse_role(name: &str) -> Option<Role> {
    match name {
        "patient" => Some(Role::Patient),
        "doctor" => Some(Role::Doctor),
        "nurse" => Some(Role::Nurse),
        "admin" => Some(Role::Admin),
        "auditor" => Some(Role::Auditor),
        _ => None,
    }
}

/// The result of the password step. `Debug` leaves the challenge out.
pub enum LoginStep {
    Done(Session),
    /// MFA is enrolled: send a TOTP or recovery code with [`Client::complete_login`].
    SecondFactor {
        challenge: String,
    },
}

impl std::fmt::Debug for LoginStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginStep::Done(session) => f.debug_tuple("Done").field(session).finish(),
            LoginStep::SecondFactor { .. } => f.write_str("SecondFactor { .. }"),
        }
    }
}

/// A second factor. `Debug` leaves the code out.
#[derive(Clone)]
pub enum Code {
    Totp(String),
    Recovery(String),
    /// The JSON of a WebAuthn assertion (`PublicKeyCredential.toJSON()`) answering the challenge's
    /// passkey request options.
    Passkey(Vec<u8>),
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Code::Totp(_) => "Totp(..)",
            Code::Recovery(_) => "Recovery(..)",
            Code::Passkey(_) => "Passkey(..)",
        })
    }
}

/// A started passkey ceremony: the WebAuthn options (`{"publicKey": {...}}` JSON) for the
/// authenticator, and the single-use token to finish it with. `Debug` leaves the token out.
#[derive(Clone)]
pub struct PasskeyCeremony {
    pub token: String,
    pub options_json: Vec<u8>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for PasskeyCeremony {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasskeyCeremony")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A registered passkey. When it is the account's first second factor: the recovery codes (shown
/// once) and, for an active account, the AAL2 session that replaces the one it was registered in.
#[derive(Clone, Debug)]
pub struct PasskeyRegistered {
    pub passkey: pb::Passkey,
    pub recovery_codes: Vec<String>,
    pub upgraded: Option<Session>,
}

/// What TOTP enrollment hands the user. `Debug` leaves the secret out.
#[derive(Clone)]
pub struct TotpEnrollment {
    pub otpauth_uri: String,
    pub secret: String,
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for TotpEnrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpEnrollment")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Client {
    fn auth(&self) -> Result<AuthServiceClient<Channel>, SdkError> {
        Ok(AuthServiceClient::new(self.require(ServiceName::Auth)?))
    }

    fn admin(&self) -> Result<AuthAdminServiceClient<Channel>, SdkError> {
        Ok(AuthAdminServiceClient::new(self.require(ServiceName::Auth)?))
    }

    pub async fn register(
        &self,
        username: &str,
        password: &str,
        role: Role,
        display_name: &str,
    ) -> Result<pb::User, SdkError> {
        let response = self
            .auth()?
            .register(pb::RegisterRequest {
                username: username.to_owned(),
                password: password.to_owned(),
                role: role.into(),
                display_name: display_name.to_owned(),
            })
            .await?;
        response
            .into_inner()
            .user
            .ok_or(SdkError::Protocol("no user in the answer"))
    }

    pub async fn login(&self, username: &str, password: &str) -> Result<LoginStep, SdkError> {
        let response = self
            .auth()?
            .login(pb::LoginRequest {
                username: username.to_owned(),
                password: password.to_owned(),
            })
            .await?
            .into_inner();
        match response.outcome {
            Some(pb::login_response::Outcome::Tokens(tokens)) => {
                Ok(LoginStep::Done(Session::from_tokens(Some(tokens))?))
            }
            Some(pb::login_response::Outcome::MfaChallenge(challenge)) => Ok(LoginStep::SecondFactor {
                challenge: challenge.challenge_token,
            }),
            None => Err(SdkError::Protocol("the login answer was empty")),
        }
    }

    pub async fn complete_login(&self, challenge: &str, code: Code) -> Result<Session, SdkError> {
        let code = match code {
            Code::Totp(code) => pb::complete_login_request::Code::TotpCode(code),
            Code::Recovery(code) => pb::complete_login_request::Code::RecoveryCode(code),
            Code::Passkey(json) => pb::complete_login_request::Code::PasskeyAssertionJson(json),
        };
        let response = self
            .auth()?
            .complete_login(pb::CompleteLoginRequest {
                challenge_token: challenge.to_owned(),
                code: Some(code),
            })
            .await?;
        Session::from_tokens(response.into_inner().tokens)
    }

    /// New tokens for `session` (its refresh token is spent).
    pub async fn refresh(&self, session: &Session) -> Result<Session, SdkError> {
        let response = self
            .auth()?
            .refresh(pb::RefreshRequest {
                refresh_token: session.refresh_token.clone(),
            })
            .await?;
        Session::from_tokens(response.into_inner().tokens)
    }

    pub async fn logout(&self, session: &Session) -> Result<(), SdkError> {
        self.auth()?
            .logout(pb::LogoutRequest {
                refresh_token: session.refresh_token.clone(),
            })
            .await?;
        Ok(())
    }

    pub async fn whoami(&self, session: &Session) -> Result<pb::WhoAmIResponse, SdkError> {
        Ok(self
            .auth()?
            .who_am_i(session.request(pb::WhoAmIRequest {})?)
            .await?
            .into_inner())
    }

    pub async fn enroll_totp(&self, session: &Session) -> Result<TotpEnrollment, SdkError> {
        let response = self
            .auth()?
            .enroll_totp(session.request(pb::EnrollTotpRequest {})?)
            .await?
            .into_inner();
        Ok(TotpEnrollment {
            otpauth_uri: response.otpauth_uri,
            secret: response.secret,
            expires_at: time_of(response.expire_time.as_ref()),
        })
    }

    /// Confirms TOTP enrollment; returns the recovery codes and, for active accounts, the new
    /// AAL2 session that replaces `session`.
    pub async fn confirm_totp(
        &self,
        session: &Session,
        code: &str,
    ) -> Result<(Vec<String>, Option<Session>), SdkError> {
        let response = self
            .auth()?
            .confirm_totp(session.request(pb::ConfirmTotpRequest { code: code.to_owned() })?)
            .await?
            .into_inner();
        let upgraded = match response.tokens {
            Some(tokens) => Some(Session::from_tokens(Some(tokens))?),
            None => None,
        };
        Ok((response.recovery_codes, upgraded))
    }

    pub async fn regenerate_recovery_codes(&self, session: &Session) -> Result<Vec<String>, SdkError> {
        let response = self
            .auth()?
            .regenerate_recovery_codes(session.request(pb::RegenerateRecoveryCodesRequest {})?)
            .await?;
        Ok(response.into_inner().recovery_codes)
    }

    pub async fn lookup_user(&self, session: &Session, username: &str) -> Result<pb::UserProfile, SdkError> {
        let response = self
            .auth()?
            .lookup_user(session.request(pb::LookupUserRequest {
                lookup: Some(pb::lookup_user_request::Lookup::Username(username.to_owned())),
            })?)
            .await?;
        response
            .into_inner()
            .profile
            .ok_or(SdkError::Protocol("no profile in the answer"))
    }

    /// The public profile of the user with id `user_id`.
    pub async fn lookup_user_id(&self, session: &Session, user_id: &str) -> Result<pb::UserProfile, SdkError> {
        let response = self
            .auth()?
            .lookup_user(session.request(pb::LookupUserRequest {
                lookup: Some(pb::lookup_user_request::Lookup::UserId(user_id.to_owned())),
            })?)
            .await?;
        response
            .into_inner()
            .profile
            .ok_or(SdkError::Protocol("no profile in the answer"))
    }

    // Passkeys. The ceremonies pass WebAuthn JSON through: a browser (or another WebAuthn client)
    // answers the options.

    /// Starts registering a passkey for the signed-in user: options for
    /// `navigator.credentials.create`.
    pub async fn start_passkey_registration(&self, session: &Session) -> Result<PasskeyCeremony, SdkError> {
        let response = self
            .auth()?
            .start_passkey_registration(session.request(pb::StartPasskeyRegistrationRequest {})?)
            .await?
            .into_inner();
        Ok(PasskeyCeremony {
            token: response.ceremony_token,
            options_json: response.creation_options_json,
            expires_at: time_of(response.expire_time.as_ref()),
        })
    }

    /// Finishes a registration with the authenticator's answer (the new credential's JSON).
    pub async fn finish_passkey_registration(
        &self,
        session: &Session,
        ceremony: &PasskeyCeremony,
        credential_json: Vec<u8>,
        name: &str,
    ) -> Result<PasskeyRegistered, SdkError> {
        let response = self
            .auth()?
            .finish_passkey_registration(session.request(pb::FinishPasskeyRegistrationRequest {
                ceremony_token: ceremony.token.clone(),
                credential_json,
                name: name.to_owned(),
            })?)
            .await?
            .into_inner();
        let upgraded = match response.tokens {
            Some(tokens) => Some(Session::from_tokens(Some(tokens))?),
            None => None,
        };
        Ok(PasskeyRegistered {
            passkey: response.passkey.ok_or(SdkError::Protocol("no passkey in the answer"))?,
            recovery_codes: response.recovery_codes,
            upgraded,
        })
    }

    /// Starts a passwordless sign-in: options for `navigator.credentials.get` naming no user.
    pub async fn start_passkey_login(&self) -> Result<PasskeyCeremony, SdkError> {
        let response = self
            .auth()?
            .start_passkey_login(pb::StartPasskeyLoginRequest {})
            .await?
            .into_inner();
        Ok(PasskeyCeremony {
            token: response.ceremony_token,
            options_json: response.request_options_json,
            expires_at: time_of(response.expire_time.as_ref()),
        })
    }

    /// Finishes a passwordless sign-in with the authenticator's assertion JSON.
    pub async fn finish_passkey_login(
        &self,
        ceremony: &PasskeyCeremony,
        credential_json: Vec<u8>,
    ) -> Result<Session, SdkError> {
        let response = self
            .auth()?
            .finish_passkey_login(pb::FinishPasskeyLoginRequest {
                ceremony_token: ceremony.token.clone(),
                credential_json,
            })
            .await?;
        Session::from_tokens(response.into_inner().tokens)
    }

    /// The caller's passkeys, oldest first, and whether their role requires one.
    pub async fn list_passkeys(&self, session: &Session) -> Result<pb::ListPasskeysResponse, SdkError> {
        let mut all = pb::ListPasskeysResponse::default();
        loop {
            let page = self
                .auth()?
                .list_passkeys(session.request(pb::ListPasskeysRequest {
                    page_size: 0,
                    page_token: std::mem::take(&mut all.next_page_token),
                })?)
                .await?
                .into_inner();
            all.passkeys.extend(page.passkeys);
            all.passkey_required = page.passkey_required;
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            all.next_page_token = page.next_page_token;
        }
    }

    /// Gives one of the caller's passkeys a new name (1 to 64 characters).
    pub async fn rename_passkey(
        &self,
        session: &Session,
        passkey_id: &str,
        name: &str,
    ) -> Result<pb::Passkey, SdkError> {
        let response = self
            .auth()?
            .rename_passkey(session.request(pb::RenamePasskeyRequest {
                passkey_id: passkey_id.to_owned(),
                name: name.to_owned(),
            })?)
            .await?;
        response
            .into_inner()
            .passkey
            .ok_or(SdkError::Protocol("no passkey in the answer"))
    }

    /// Removes one of the caller's passkeys (needs AAL2); it can no longer sign in.
    pub async fn remove_passkey(&self, session: &Session, passkey_id: &str) -> Result<(), SdkError> {
        self.auth()?
            .remove_passkey(session.request(pb::RemovePasskeyRequest {
                passkey_id: passkey_id.to_owned(),
            })?)
            .await?;
        Ok(())
    }

    // Administration (admin role, AAL2).

    pub async fn admin_get_user(&self, session: &Session, username: &str) -> Result<pb::User, SdkError> {
        let response = self
            .admin()?
            .get_user(session.request(pb::GetUserRequest {
                lookup: Some(pb::get_user_request::Lookup::Username(username.to_owned())),
            })?)
            .await?;
        response
            .into_inner()
            .user
            .ok_or(SdkError::Protocol("no user in the answer"))
    }

    /// Users waiting for approval (one page of up to 500).
    pub async fn admin_pending(&self, session: &Session) -> Result<Vec<pb::User>, SdkError> {
        let response = self
            .admin()?
            .list_users(session.request(pb::ListUsersRequest {
                page_size: 500,
                status: pb::UserStatus::Pending.into(),
                ..pb::ListUsersRequest::default()
            })?)
            .await?;
        Ok(response.into_inner().users)
    }

    pub async fn admin_create_user(
        &self,
        session: &Session,
        username: &str,
        role: Role,
        display_name: &str,
        attributes: &[String],
    ) -> Result<(pb::User, String), SdkError> {
        let response = self
            .admin()?
            .create_user(session.request(pb::CreateUserRequest {
                username: username.to_owned(),
                role: role.into(),
                display_name: display_name.to_owned(),
                password: String::new(),
                attributes: attributes.to_vec(),
            })?)
            .await?
            .into_inner();
        let user = response.user.ok_or(SdkError::Protocol("no user in the answer"))?;
        Ok((user, response.initial_password))
    }

    /// Approves `username` with `attributes` (reads the current etag first).
    pub async fn admin_approve(
        &self,
        session: &Session,
        username: &str,
        attributes: &[String],
    ) -> Result<pb::User, SdkError> {
        let user = self.admin_get_user(session, username).await?;
        let response = self
            .admin()?
            .approve_user(session.request(pb::ApproveUserRequest {
                user_id: user.user_id,
                attributes: attributes.to_vec(),
                etag: user.etag,
            })?)
            .await?;
        response
            .into_inner()
            .user
            .ok_or(SdkError::Protocol("no user in the answer"))
    }

    pub async fn admin_set_attributes(
        &self,
        session: &Session,
        username: &str,
        attributes: &[String],
    ) -> Result<pb::User, SdkError> {
        let user = self.admin_get_user(session, username).await?;
        let response = self
            .admin()?
            .update_user_attributes(session.request(pb::UpdateUserAttributesRequest {
                user_id: user.user_id,
                attributes: attributes.to_vec(),
                etag: user.etag,
            })?)
            .await?;
        response
            .into_inner()
            .user
            .ok_or(SdkError::Protocol("no user in the answer"))
    }

    /// Disables or enables `username`.
    pub async fn admin_set_disabled(
        &self,
        session: &Session,
        username: &str,
        disabled: bool,
    ) -> Result<pb::User, SdkError> {
        let user = self.admin_get_user(session, username).await?;
        let mut admin = self.admin()?;
        let user = if disabled {
            admin
                .disable_user(session.request(pb::DisableUserRequest {
                    user_id: user.user_id,
                    reason: String::new(),
                    etag: user.etag,
                })?)
                .await?
                .into_inner()
                .user
        } else {
            admin
                .enable_user(session.request(pb::EnableUserRequest {
                    user_id: user.user_id,
                    etag: user.etag,
                })?)
                .await?
                .into_inner()
                .user
        };
        user.ok_or(SdkError::Protocol("no user in the answer"))
    }

    pub async fn admin_unlock(&self, session: &Session, username: &str) -> Result<pb::User, SdkError> {
        let user = self.admin_get_user(session, username).await?;
        let response = self
            .admin()?
            .unlock_user(session.request(pb::UnlockUserRequest {
                user_id: user.user_id,
                etag: user.etag,
            })?)
            .await?;
        response
            .into_inner()
            .user
            .ok_or(SdkError::Protocol("no user in the answer"))
    }

    /// Ends every session of `username`; returns how many.
    pub async fn admin_revoke(&self, session: &Session, username: &str) -> Result<u32, SdkError> {
        let user = self.admin_get_user(session, username).await?;
        let response = self
            .admin()?
            .revoke_user_sessions(session.request(pb::RevokeUserSessionsRequest { user_id: user.user_id })?)
            .await?;
        Ok(response.into_inner().revoked_sessions)
    }

    /// Sets whether users of `role` must sign in with a passkey as their second factor.
    pub async fn admin_set_role_policy(
        &self,
        session: &Session,
        role: Role,
        passkey_required: bool,
    ) -> Result<pb::RolePolicy, SdkError> {
        let response = self
            .admin()?
            .set_role_policy(session.request(pb::SetRolePolicyRequest {
                role: role.into(),
                passkey_required,
            })?)
            .await?;
        response
            .into_inner()
            .policy
            .ok_or(SdkError::Protocol("no policy in the answer"))
    }

    /// The sign-in policy of every role.
    pub async fn admin_role_policies(&self, session: &Session) -> Result<Vec<pb::RolePolicy>, SdkError> {
        let response = self
            .admin()?
            .get_role_policies(session.request(pb::GetRolePoliciesRequest {})?)
            .await?;
        Ok(response.into_inner().policies)
    }

    pub async fn admin_rotate_signing_key(&self, session: &Session) -> Result<pb::VerificationKey, SdkError> {
        let response = self
            .admin()?
            .rotate_signing_key(session.request(pb::RotateSigningKeyRequest {})?)
            .await?;
        response
            .into_inner()
            .key
            .ok_or(SdkError::Protocol("no key in the answer"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_tokens_codes_or_secrets() {
        let session = Session {
            user_id: "u".to_owned(),
            role: "patient".to_owned(),
            session_id: "s".to_owned(),
            aal: 2,
            access_token: "cmt1.SECRET-ACCESS".to_owned(),
            access_expires_at: Utc::now(),
            refresh_token: "cmr1_SECRET-REFRESH".to_owned(),
            session_expires_at: Utc::now(),
        };
        let enrollment = TotpEnrollment {
            otpauth_uri: "otpauth://totp/x?secret=SECRETBASE32".to_owned(),
            secret: "SECRETBASE32".to_owned(),
            expires_at: None,
        };
        let ceremony = PasskeyCeremony {
            token: "cmk1_SECRET-CEREMONY".to_owned(),
            options_json: b"{}".to_vec(),
            expires_at: None,
        };
        let printed = format!(
            "{session:?} {:?} {:?} {:?} {:?} {enrollment:?} {ceremony:?}",
            LoginStep::SecondFactor {
                challenge: "cmc1_SECRET-CHALLENGE".to_owned()
            },
            Code::Totp("123456".to_owned()),
            Code::Recovery("abcd-efgh-ijkm".to_owned()),
            Code::Passkey(br#"{"SECRET":1}"#.to_vec()),
        );
        for secret in ["SECRET", "123456", "abcd-efgh"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
    }
}
