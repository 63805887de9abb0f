//! The gRPC adapter of auth-svc: unpack the request, call the domain, convert the result. Every
//! user-facing RPC except registration, login and key publication authenticates its caller by
//! access token first.

use std::sync::Arc;

use caremesh_proto::auth::v1 as pb;
use caremesh_proto::auth::v1::auth_admin_service_server::{AuthAdminService, AuthAdminServiceServer};
use caremesh_proto::auth::v1::auth_internal_service_server::{AuthInternalService, AuthInternalServiceServer};
use caremesh_proto::auth::v1::auth_service_server::{AuthService, AuthServiceServer};
use caremesh_runtime::auth::{Principal, TokenVerifier, bearer_token};
use caremesh_runtime::clock::SharedClock;
use caremesh_runtime::grpc::peer_identity;
use caremesh_runtime::time::{from_timestamp, to_timestamp};
use caremesh_runtime::{Error, MeshRouter, ServiceRuntime};
use tonic::{Request, Response, Status};

use crate::accounts::{NewUser, UserFilter, UserView};
use crate::domain::{AuthDomain, Caller, etag};
use crate::emergency::NewGrant;
use crate::keys::PublishedKey;
use crate::passkeys::{Ceremony, PasskeyView};
use crate::revocations;
use crate::sessions::{FactorKind, IssuedSession, LoginOutcome, SecondFactor};
use crate::storage::role_policy;

pub fn router(runtime: &ServiceRuntime, domain: AuthDomain) -> MeshRouter {
    let api = Api {
        domain,
        tokens: Arc::clone(&runtime.tokens),
        clock: Arc::clone(&runtime.clock),
    };
    MeshRouter::new()
        .with(AuthServiceServer::new(api.clone()))
        .with(AuthAdminServiceServer::new(api.clone()))
        .with(AuthInternalServiceServer::new(api))
}

#[derive(Clone, Debug)]
struct Api {
    domain: AuthDomain,
    tokens: Arc<dyn TokenVerifier>,
    clock: SharedClock,
}

impl Api {
    async fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Error> {
        self.tokens
            .verify(bearer_token(request.metadata())?, self.clock.now())
            .await
    }

    /// The signed-in caller and how the audit log names them.
    async fn signed_in<T>(&self, request: &Request<T>) -> Result<(Principal, Caller), Error> {
        let principal = self.principal(request).await?;
        let caller = Caller::user(&principal, remote_addr(request));
        Ok((principal, caller))
    }
}

impl Api {
    /// A signed-in admin, for the AuthAdminService RPCs: anyone else is refused, and the
    /// refusal is audited.
    async fn administrator<T>(&self, request: &Request<T>, operation: &str) -> Result<(Principal, Caller), Error> {
        let (principal, caller) = self.signed_in(request).await?;
        if let Err(refusal) = principal.require_role(&["admin"]) {
            return Err(self.domain.refused(&caller, operation, refusal).await);
        }
        Ok((principal, caller))
    }
}

fn remote_addr<T>(request: &Request<T>) -> Option<std::net::SocketAddr> {
    peer_identity(request).and_then(|peer| peer.remote_addr)
}

fn role_name(role: i32) -> Result<&'static str, Error> {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Patient) => Ok("patient"),
        Ok(pb::Role::Doctor) => Ok("doctor"),
        Ok(pb::Role::Nurse) => Ok("nurse"),
        Ok(pb::Role::Admin) => Ok("admin"),
        Ok(pb::Role::Auditor) => Ok("auditor"),
        _ => Err(Error::invalid_argument(
            "INVALID_ROLE",
            "role must be ROLE_PATIENT, ROLE_DOCTOR, ROLE_NURSE, ROLE_ADMIN or ROLE_AUDITOR",
        )),
    }
}

fn role_value(role: &str) -> pb::Role {
    match role {
        "patient" => pb::Role::Patient,
        "doctor" => pb::Role::Doctor,
        "nurse" => pb::Role::Nurse,
        "admin" => pb::Role::Admin,
        "auditor" => pb::Role::Auditor,
        _ => pb::Role::Unspecified,
    }
}

fn status_value(status: &str) -> pb::UserStatus {
    match status {
        "pending" => pb::UserStatus::Pending,
        "active" => pb::UserStatus::Active,
        "disabled" => pb::UserStatus::Disabled,
        _ => pb::UserStatus::Unspecified,
    }
}

fn aal_value(aal: u8) -> pb::AssuranceLevel {
    if aal >= 2 {
        pb::AssuranceLevel::Aal2
    } else {
        pb::AssuranceLevel::Aal1
    }
}

fn user_message(view: &UserView) -> pb::User {
    let row = &view.row;
    pb::User {
        user_id: row.id.clone(),
        username: row.username.clone(),
        display_name: row.display_name.clone(),
        role: role_value(&row.role).into(),
        status: status_value(&row.status).into(),
        attributes: view.assigned.clone(),
        derived_attributes: view.derived.clone(),
        mfa_enrolled: row.totp_secret.is_some() || row.passkey_count > 0,
        locked: row.locked,
        failed_login_attempts: u32::try_from(row.failed_attempts).unwrap_or(0),
        create_time: Some(to_timestamp(row.created_at)),
        update_time: Some(to_timestamp(row.updated_at)),
        approve_time: row.approved_at.map(to_timestamp),
        etag: etag(row.version),
    }
}

fn profile_message(view: &UserView) -> pb::UserProfile {
    pb::UserProfile {
        user_id: view.row.id.clone(),
        username: view.row.username.clone(),
        display_name: view.row.display_name.clone(),
        role: role_value(&view.row.role).into(),
        status: status_value(&view.row.status).into(),
    }
}

fn tokens_message(session: IssuedSession) -> pb::SessionTokens {
    pb::SessionTokens {
        access_token: session.access_token,
        access_token_expire_time: Some(to_timestamp(session.access_expires_at)),
        refresh_token: session.refresh_token,
        idle_expire_time: Some(to_timestamp(session.idle_expires_at)),
        session_expire_time: Some(to_timestamp(session.session_expires_at)),
        session_id: session.session_id,
        aal: aal_value(session.aal).into(),
        user_id: session.user_id,
        role: role_value(&session.role).into(),
    }
}

fn passkey_message(passkey: PasskeyView) -> pb::Passkey {
    pb::Passkey {
        passkey_id: passkey.id,
        name: passkey.name,
        credential_id: passkey.credential_id,
        create_time: Some(to_timestamp(passkey.created_at)),
        last_use_time: passkey.last_used_at.map(to_timestamp),
        sign_count: passkey.sign_count,
        backup_eligible: passkey.backup_eligible,
        backup_state: passkey.backup_state,
    }
}

fn factor_value(factor: FactorKind) -> i32 {
    match factor {
        FactorKind::Totp => pb::SecondFactor::Totp,
        FactorKind::RecoveryCode => pb::SecondFactor::RecoveryCode,
        FactorKind::Passkey => pb::SecondFactor::Passkey,
    }
    .into()
}

fn role_policy_message(role: pb::Role, policy: Option<&role_policy::Model>) -> pb::RolePolicy {
    pb::RolePolicy {
        role: role.into(),
        passkey_required: policy.is_some_and(|policy| policy.passkey_required),
        update_time: policy.map(|policy| to_timestamp(policy.updated_at)),
    }
}

fn key_message(key: PublishedKey) -> pb::VerificationKey {
    pb::VerificationKey {
        key_id: key.kid,
        algorithm: "Ed25519".to_owned(),
        public_key: key.public_key,
        create_time: Some(to_timestamp(key.created_at)),
        retire_time: key.retire_at.map(to_timestamp),
        current: key.current,
    }
}

fn required<'a>(value: &'a str, field: &'static str) -> Result<&'a str, Error> {
    if value.is_empty() {
        Err(Error::invalid_argument("MISSING_FIELD", format!("{field} is required")))
    } else {
        Ok(value)
    }
}

#[tonic::async_trait]
impl AuthService for Api {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let caller = Caller::anonymous(remote_addr(&request));
        let body = request.into_inner();
        let user = self
            .domain
            .register(
                &caller,
                NewUser {
                    username: required(&body.username, "username")?,
                    password: required(&body.password, "password")?,
                    role: role_name(body.role)?,
                    display_name: &body.display_name,
                    attributes: &[],
                },
            )
            .await?;
        Ok(Response::new(pb::RegisterResponse {
            user: Some(user_message(&user)),
        }))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let caller = Caller::anonymous(remote_addr(&request));
        let body = request.into_inner();
        let outcome = match self.domain.login(&caller, &body.username, &body.password).await? {
            LoginOutcome::Tokens(session) => pb::login_response::Outcome::Tokens(tokens_message(session)),
            LoginOutcome::MfaRequired {
                challenge,
                expires_at,
                factors,
                passkey_options,
            } => pb::login_response::Outcome::MfaChallenge(pb::MfaChallenge {
                challenge_token: challenge,
                expire_time: Some(to_timestamp(expires_at)),
                factors: factors.into_iter().map(factor_value).collect(),
                passkey_request_options_json: passkey_options.unwrap_or_default(),
            }),
        };
        Ok(Response::new(pb::LoginResponse { outcome: Some(outcome) }))
    }

    async fn complete_login(
        &self,
        request: Request<pb::CompleteLoginRequest>,
    ) -> Result<Response<pb::CompleteLoginResponse>, Status> {
        let caller = Caller::anonymous(remote_addr(&request));
        let body = request.into_inner();
        let factor = match body.code {
            Some(pb::complete_login_request::Code::TotpCode(code)) => SecondFactor::Totp(code),
            Some(pb::complete_login_request::Code::RecoveryCode(code)) => SecondFactor::RecoveryCode(code),
            Some(pb::complete_login_request::Code::PasskeyAssertionJson(json)) => SecondFactor::Passkey(json),
            None => {
                return Err(Error::invalid_argument(
                    "MISSING_CODE",
                    "send a totp_code, a recovery_code or a passkey_assertion_json",
                )
                .into());
            }
        };
        let (session, remaining) = self
            .domain
            .complete_login(&caller, required(&body.challenge_token, "challenge_token")?, factor)
            .await?;
        Ok(Response::new(pb::CompleteLoginResponse {
            tokens: Some(tokens_message(session)),
            recovery_codes_remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        }))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Result<Response<pb::RefreshResponse>, Status> {
        let caller = Caller::anonymous(remote_addr(&request));
        let body = request.into_inner();
        let session = self
            .domain
            .refresh(&caller, required(&body.refresh_token, "refresh_token")?)
            .await?;
        Ok(Response::new(pb::RefreshResponse {
            tokens: Some(tokens_message(session)),
        }))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        let caller = Caller::anonymous(remote_addr(&request));
        let body = request.into_inner();
        self.domain
            .logout(&caller, required(&body.refresh_token, "refresh_token")?)
            .await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let principal = self.principal(&request).await?;
        let (user, session, remaining) = self.domain.whoami(&principal).await?;
        Ok(Response::new(pb::WhoAmIResponse {
            user: Some(user_message(&user)),
            session_id: session.id,
            aal: aal_value(principal.aal).into(),
            token_attributes: principal.attributes,
            session_expire_time: Some(to_timestamp(session.expires_at)),
            recovery_codes_remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        }))
    }

    async fn enroll_totp(
        &self,
        request: Request<pb::EnrollTotpRequest>,
    ) -> Result<Response<pb::EnrollTotpResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let enrollment = self.domain.enroll_totp(&principal, &caller).await?;
        Ok(Response::new(pb::EnrollTotpResponse {
            otpauth_uri: enrollment.otpauth_uri,
            secret: enrollment.secret_base32,
            issuer: self.domain.settings.totp_issuer.clone(),
            algorithm: "SHA1".to_owned(),
            digits: crate::totp::DIGITS,
            period: Some(prost_types::Duration {
                seconds: crate::totp::PERIOD_SECONDS,
                nanos: 0,
            }),
            expire_time: Some(to_timestamp(enrollment.expires_at)),
        }))
    }

    async fn confirm_totp(
        &self,
        request: Request<pb::ConfirmTotpRequest>,
    ) -> Result<Response<pb::ConfirmTotpResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let code = request.into_inner().code;
        let (codes, session) = self
            .domain
            .confirm_totp(&principal, &caller, required(&code, "code")?)
            .await?;
        Ok(Response::new(pb::ConfirmTotpResponse {
            recovery_codes: codes,
            tokens: session.map(tokens_message),
        }))
    }

    async fn regenerate_recovery_codes(
        &self,
        request: Request<pb::RegenerateRecoveryCodesRequest>,
    ) -> Result<Response<pb::RegenerateRecoveryCodesResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let codes = self.domain.regenerate_recovery_codes(&principal, &caller).await?;
        Ok(Response::new(pb::RegenerateRecoveryCodesResponse {
            recovery_codes: codes,
        }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let revoked = self
            .domain
            .change_password(&principal, &caller, &body.current_password, &body.new_password)
            .await?;
        Ok(Response::new(pb::ChangePasswordResponse {
            revoked_sessions: u32::try_from(revoked).unwrap_or(u32::MAX),
        }))
    }

    async fn lookup_user(
        &self,
        request: Request<pb::LookupUserRequest>,
    ) -> Result<Response<pb::LookupUserResponse>, Status> {
        let principal = self.principal(&request).await?;
        let (user_id, username) = match request.into_inner().lookup {
            Some(pb::lookup_user_request::Lookup::UserId(id)) => (Some(id), None),
            Some(pb::lookup_user_request::Lookup::Username(name)) => (None, Some(name)),
            None => (None, None),
        };
        let user = self
            .domain
            .lookup(&principal, user_id.as_deref(), username.as_deref())
            .await?;
        Ok(Response::new(pb::LookupUserResponse {
            profile: Some(profile_message(&user)),
        }))
    }

    async fn get_verification_keys(
        &self,
        _request: Request<pb::GetVerificationKeysRequest>,
    ) -> Result<Response<pb::GetVerificationKeysResponse>, Status> {
        let keys = self.domain.verification_keys().await?;
        Ok(Response::new(pb::GetVerificationKeysResponse {
            keys: keys.into_iter().map(key_message).collect(),
            cache_ttl: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        }))
    }

    async fn start_passkey_registration(
        &self,
        request: Request<pb::StartPasskeyRegistrationRequest>,
    ) -> Result<Response<pb::StartPasskeyRegistrationResponse>, Status> {
        let (principal, _) = self.signed_in(&request).await?;
        let Ceremony {
            token,
            options_json,
            expires_at,
        } = self.domain.start_passkey_registration(&principal).await?;
        Ok(Response::new(pb::StartPasskeyRegistrationResponse {
            ceremony_token: token,
            creation_options_json: options_json,
            expire_time: Some(to_timestamp(expires_at)),
        }))
    }

    async fn finish_passkey_registration(
        &self,
        request: Request<pb::FinishPasskeyRegistrationRequest>,
    ) -> Result<Response<pb::FinishPasskeyRegistrationResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let registered = self
            .domain
            .finish_passkey_registration(
                &principal,
                &caller,
                required(&body.ceremony_token, "ceremony_token")?,
                &body.credential_json,
                &body.name,
            )
            .await?;
        Ok(Response::new(pb::FinishPasskeyRegistrationResponse {
            passkey: Some(passkey_message(registered.passkey)),
            recovery_codes: registered.recovery_codes,
            tokens: registered.upgraded.map(tokens_message),
        }))
    }

    async fn list_passkeys(
        &self,
        request: Request<pb::ListPasskeysRequest>,
    ) -> Result<Response<pb::ListPasskeysResponse>, Status> {
        let (principal, _) = self.signed_in(&request).await?;
        let body = request.get_ref();
        let (passkeys, passkey_required, next_page_token) = self
            .domain
            .list_passkeys(&principal, body.page_size, &body.page_token)
            .await?;
        Ok(Response::new(pb::ListPasskeysResponse {
            passkeys: passkeys.into_iter().map(passkey_message).collect(),
            passkey_required,
            next_page_token,
        }))
    }

    async fn rename_passkey(
        &self,
        request: Request<pb::RenamePasskeyRequest>,
    ) -> Result<Response<pb::RenamePasskeyResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let passkey = self
            .domain
            .rename_passkey(
                &principal,
                &caller,
                required(&body.passkey_id, "passkey_id")?,
                &body.name,
            )
            .await?;
        Ok(Response::new(pb::RenamePasskeyResponse {
            passkey: Some(passkey_message(passkey)),
        }))
    }

    async fn remove_passkey(
        &self,
        request: Request<pb::RemovePasskeyRequest>,
    ) -> Result<Response<pb::RemovePasskeyResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        self.domain
            .remove_passkey(&principal, &caller, required(&body.passkey_id, "passkey_id")?)
            .await?;
        Ok(Response::new(pb::RemovePasskeyResponse {}))
    }

    async fn start_passkey_login(
        &self,
        request: Request<pb::StartPasskeyLoginRequest>,
    ) -> Result<Response<pb::StartPasskeyLoginResponse>, Status> {
        let caller = Caller::anonymous(remote_addr(&request));
        let Ceremony {
            token,
            options_json,
            expires_at,
        } = self.domain.start_passkey_login(&caller).await?;
        Ok(Response::new(pb::StartPasskeyLoginResponse {
            ceremony_token: token,
            request_options_json: options_json,
            expire_time: Some(to_timestamp(expires_at)),
        }))
    }

    async fn finish_passkey_login(
        &self,
        request: Request<pb::FinishPasskeyLoginRequest>,
    ) -> Result<Response<pb::FinishPasskeyLoginResponse>, Status> {
        let caller = Caller::anonymous(remote_addr(&request));
        let body = request.into_inner();
        let (session, remaining) = self
            .domain
            .finish_passkey_login(
                &caller,
                required(&body.ceremony_token, "ceremony_token")?,
                &body.credential_json,
            )
            .await?;
        Ok(Response::new(pb::FinishPasskeyLoginResponse {
            tokens: Some(tokens_message(session)),
            recovery_codes_remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        }))
    }
}

fn lookup(lookup: Option<pb::get_user_request::Lookup>) -> (Option<String>, Option<String>) {
    match lookup {
        Some(pb::get_user_request::Lookup::UserId(id)) => (Some(id), None),
        Some(pb::get_user_request::Lookup::Username(name)) => (None, Some(name)),
        None => (None, None),
    }
}

#[tonic::async_trait]
impl AuthAdminService for Api {
    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let (principal, _) = self.administrator(&request, "ListUsers").await?;
        let body = request.into_inner();
        let filter = UserFilter {
            status: match pb::UserStatus::try_from(body.status) {
                Ok(pb::UserStatus::Pending) => Some("pending".to_owned()),
                Ok(pb::UserStatus::Active) => Some("active".to_owned()),
                Ok(pb::UserStatus::Disabled) => Some("disabled".to_owned()),
                _ => None,
            },
            role: match body.role {
                0 => None,
                role => Some(role_name(role)?.to_owned()),
            },
            locked: body.locked,
            username_prefix: body.username_prefix,
        };
        let (users, next) = self
            .domain
            .list_users(&principal, &filter, body.page_size, &body.page_token)
            .await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.iter().map(user_message).collect(),
            next_page_token: next,
        }))
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Result<Response<pb::GetUserResponse>, Status> {
        let (principal, _) = self.administrator(&request, "GetUser").await?;
        let (user_id, username) = lookup(request.into_inner().lookup);
        let user = self
            .domain
            .get_user(&principal, user_id.as_deref(), username.as_deref())
            .await?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user_message(&user)),
        }))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let (principal, caller) = self.administrator(&request, "CreateUser").await?;
        let body = request.into_inner();
        let generated = body.password.is_empty();
        let (user, password) = self
            .domain
            .create_user(
                &principal,
                &caller,
                NewUser {
                    username: required(&body.username, "username")?,
                    password: &body.password,
                    role: role_name(body.role)?,
                    display_name: &body.display_name,
                    attributes: &body.attributes,
                },
            )
            .await?;
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(user_message(&user)),
            initial_password: if generated { password } else { String::new() },
        }))
    }

    async fn approve_user(
        &self,
        request: Request<pb::ApproveUserRequest>,
    ) -> Result<Response<pb::ApproveUserResponse>, Status> {
        let (principal, caller) = self.administrator(&request, "ApproveUser").await?;
        let body = request.into_inner();
        let user = self
            .domain
            .approve_user(
                &principal,
                &caller,
                required(&body.user_id, "user_id")?,
                &body.attributes,
                &body.etag,
            )
            .await?;
        Ok(Response::new(pb::ApproveUserResponse {
            user: Some(user_message(&user)),
        }))
    }

    async fn update_user_attributes(
        &self,
        request: Request<pb::UpdateUserAttributesRequest>,
    ) -> Result<Response<pb::UpdateUserAttributesResponse>, Status> {
        let (principal, caller) = self.administrator(&request, "UpdateUserAttributes").await?;
        let body = request.into_inner();
        let user = self
            .domain
            .update_attributes(
                &principal,
                &caller,
                required(&body.user_id, "user_id")?,
                &body.attributes,
                &body.etag,
            )
            .await?;
        Ok(Response::new(pb::UpdateUserAttributesResponse {
            user: Some(user_message(&user)),
        }))
    }

    async fn disable_user(
        &self,
        request: Request<pb::DisableUserRequest>,
    ) -> Result<Response<pb::DisableUserResponse>, Status> {
        let (principal, caller) = self.administrator(&request, "DisableUser").await?;
        let body = request.into_inner();
        let user = self
            .domain
            .set_disabled(
                &principal,
                &caller,
                required(&body.user_id, "user_id")?,
                true,
                &body.etag,
            )
            .await?;
        Ok(Response::new(pb::DisableUserResponse {
            user: Some(user_message(&user)),
        }))
    }

    async fn enable_user(
        &self,
        request: Request<pb::EnableUserRequest>,
    ) -> Result<Response<pb::EnableUserResponse>, Status> {
        let (principal, caller) = self.administrator(&request, "EnableUser").await?;
        let body = request.into_inner();
        let user = self
            .domain
            .set_disabled(
                &principal,
                &caller,
                required(&body.user_id, "user_id")?,
                false,
                &body.etag,
            )
            .await?;
        Ok(Response::new(pb::EnableUserResponse {
            user: Some(user_message(&user)),
        }))
    }

    async fn unlock_user(
        &self,
        request: Request<pb::UnlockUserRequest>,
    ) -> Result<Response<pb::UnlockUserResponse>, Status> {
        let (principal, caller) = self.administrator(&request, "UnlockUser").await?;
        let body = request.into_inner();
        let user = self
            .domain
            .unlock_user(&principal, &caller, required(&body.user_id, "user_id")?, &body.etag)
            .await?;
        Ok(Response::new(pb::UnlockUserResponse {
            user: Some(user_message(&user)),
        }))
    }

    async fn revoke_user_sessions(
        &self,
        request: Request<pb::RevokeUserSessionsRequest>,
    ) -> Result<Response<pb::RevokeUserSessionsResponse>, Status> {
        let (principal, caller) = self.administrator(&request, "RevokeUserSessions").await?;
        let body = request.into_inner();
        let revoked = self
            .domain
            .admin_revoke_sessions(&principal, &caller, required(&body.user_id, "user_id")?)
            .await?;
        Ok(Response::new(pb::RevokeUserSessionsResponse {
            revoked_sessions: u32::try_from(revoked).unwrap_or(u32::MAX),
        }))
    }

    async fn reset_user_mfa(
        &self,
        request: Request<pb::ResetUserMfaRequest>,
    ) -> Result<Response<pb::ResetUserMfaResponse>, Status> {
        let (principal, caller) = self.administrator(&request, "ResetUserMfa").await?;
        let body = request.into_inner();
        let user = self
            .domain
            .reset_mfa(&principal, &caller, required(&body.user_id, "user_id")?, &body.etag)
            .await?;
        Ok(Response::new(pb::ResetUserMfaResponse {
            user: Some(user_message(&user)),
        }))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        let (principal, caller) = self.administrator(&request, "RotateSigningKey").await?;
        let key = self.domain.rotate_signing_key(&principal, &caller).await?;
        Ok(Response::new(pb::RotateSigningKeyResponse {
            key: Some(key_message(key)),
        }))
    }

    async fn set_role_policy(
        &self,
        request: Request<pb::SetRolePolicyRequest>,
    ) -> Result<Response<pb::SetRolePolicyResponse>, Status> {
        let (principal, caller) = self.administrator(&request, "SetRolePolicy").await?;
        let body = request.into_inner();
        let role = pb::Role::try_from(body.role).unwrap_or(pb::Role::Unspecified);
        let policy = self
            .domain
            .set_role_policy(&principal, &caller, role_name(body.role)?, body.passkey_required)
            .await?;
        Ok(Response::new(pb::SetRolePolicyResponse {
            policy: Some(role_policy_message(role, Some(&policy))),
        }))
    }

    async fn get_role_policies(
        &self,
        request: Request<pb::GetRolePoliciesRequest>,
    ) -> Result<Response<pb::GetRolePoliciesResponse>, Status> {
        let (principal, _) = self.administrator(&request, "GetRolePolicies").await?;
        let stored = self.domain.role_policies(&principal).await?;
        let policies = [
            pb::Role::Patient,
            pb::Role::Doctor,
            pb::Role::Nurse,
            pb::Role::Admin,
            pb::Role::Auditor,
        ]
        .into_iter()
        .map(|role| {
            let name = role_name(role.into()).unwrap_or_default();
            role_policy_message(role, stored.iter().find(|policy| policy.role == name))
        })
        .collect();
        Ok(Response::new(pb::GetRolePoliciesResponse { policies }))
    }
}

#[tonic::async_trait]
impl AuthInternalService for Api {
    async fn get_user_attributes(
        &self,
        request: Request<pb::GetUserAttributesRequest>,
    ) -> Result<Response<pb::GetUserAttributesResponse>, Status> {
        let body = request.into_inner();
        let user_id = required(&body.user_id, "user_id")?;
        let user = self.domain.user_attributes(user_id).await?;
        let temporary = self.domain.temporary_attributes(user_id).await?;
        Ok(Response::new(pb::GetUserAttributesResponse {
            user_id: user.row.id.clone(),
            role: role_value(&user.row.role).into(),
            status: status_value(&user.row.status).into(),
            attributes: user.all_attributes(),
            temporary_attributes: temporary
                .into_iter()
                .map(|grant| pb::TemporaryAttribute {
                    attribute: grant.attribute,
                    expire_time: Some(to_timestamp(grant.expires_at)),
                    grant_id: grant.grant_id,
                })
                .collect(),
            etag: etag(user.row.version),
        }))
    }

    async fn batch_get_user_profiles(
        &self,
        request: Request<pb::BatchGetUserProfilesRequest>,
    ) -> Result<Response<pb::BatchGetUserProfilesResponse>, Status> {
        let users = self.domain.profiles(&request.into_inner().user_ids).await?;
        Ok(Response::new(pb::BatchGetUserProfilesResponse {
            profiles: users.iter().map(profile_message).collect(),
        }))
    }

    async fn grant_emergency_attribute(
        &self,
        request: Request<pb::GrantEmergencyAttributeRequest>,
    ) -> Result<Response<pb::GrantEmergencyAttributeResponse>, Status> {
        let body = request.into_inner();
        let expires_at = body
            .expire_time
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(|| Error::invalid_argument("MISSING_EXPIRE_TIME", "expire_time is required"))?;
        let attribute = self
            .domain
            .grant_emergency_attribute(NewGrant {
                grant_id: required(&body.grant_id, "grant_id")?,
                user_id: required(&body.user_id, "user_id")?,
                patient_id: required(&body.patient_id, "patient_id")?,
                expires_at,
            })
            .await?;
        Ok(Response::new(pb::GrantEmergencyAttributeResponse { attribute }))
    }

    async fn poll_revocations(
        &self,
        request: Request<pb::PollRevocationsRequest>,
    ) -> Result<Response<pb::PollRevocationsResponse>, Status> {
        let since = request.into_inner().since.as_ref().and_then(from_timestamp);
        let feed = self.domain.revocations(since).await?;
        Ok(Response::new(pb::PollRevocationsResponse {
            server_time: Some(to_timestamp(feed.read_at)),
            sessions: feed
                .sessions
                .into_iter()
                .map(|(session_id, user_id, revoked_at)| pb::RevokedSession {
                    session_id,
                    user_id,
                    revoke_time: Some(to_timestamp(revoked_at)),
                })
                .collect(),
            removed_attributes: feed
                .removed_attributes
                .into_iter()
                .map(|removal| pb::RemovedAttribute {
                    user_id: removal.user_id,
                    attribute: removal.attribute,
                    remove_time: Some(to_timestamp(removal.removed_at)),
                })
                .collect(),
            retention: Some(prost_types::Duration {
                seconds: revocations::retention().num_seconds(),
                nanos: 0,
            }),
            more_since: feed.more_since.map(to_timestamp),
        }))
    }
}
