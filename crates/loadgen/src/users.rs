//! Simulated people, made the way a person is: patients register; doctors register and an admin
//! approves them with `dept:cardiology`; the auditor is created by the admin; each enrolls TOTP
//! and confirms it with a real code, ending with an AAL2 session. Usernames carry a prefix unique
//! to the run, so repeated runs against the same mesh do not collide.
//!
//! Enrollment confirms with the code of the step that has just ended (auth-svc accepts a code one
//! step late), so every user can log in once in the current step, also on real time.
//!
//! The mesh's per-address throttles (registration, login) are meant for people; one load
//! generator stands in for many. A throttled setup call waits and retries, saying so once.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use caremesh_sdk::auth::{Code, LoginStep, Role, Session};
use caremesh_sdk::{Client, SdkError};

use crate::login::{TotpClock, step_of, totp_code};

/// The longest a setup call waits out auth-svc's throttles before giving up.
const MAX_THROTTLE_WAIT: Duration = Duration::from_secs(600);

/// A user the load generator acts as.
#[derive(Clone, Debug)]
pub struct Account {
    pub user_id: String,
    pub username: String,
    pub password: String,
    pub totp_secret: Vec<u8>,
    pub session: Session,
    /// The TOTP step the user last used (its enrollment).
    pub last_step: Option<u64>,
}

/// A unique username prefix for one run: `lg<8 hex>`.
pub fn run_prefix() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("lg{}", id.get(24..).unwrap_or(&id))
}

/// A passphrase zxcvbn rates strong, unrelated to the username.
pub fn strong_password() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("vellum orbit cactus lantern {}", id.get(20..).unwrap_or(&id))
}

static THROTTLE_NOTED: AtomicBool = AtomicBool::new(false);

/// Runs `call`, waiting out RESOURCE_EXHAUSTED answers (auth-svc's per-address throttles).
pub async fn patiently<T, F, Fut>(what: &str, mut call: F) -> Result<T, SdkError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError>>,
{
    let mut waited = Duration::ZERO;
    loop {
        match call().await {
            Err(error) if error.code() == Some(tonic::Code::ResourceExhausted) && waited < MAX_THROTTLE_WAIT => {
                if !THROTTLE_NOTED.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "  {what}: throttled by auth-svc ({error}); waiting and retrying. One load generator \
                         stands in for many people: start the mesh with CAREMESH_AUTH_REGISTER_RATE_PER_MINUTE \
                         and CAREMESH_AUTH_LOGIN_RATE_PER_MINUTE raised (e.g. 1000000) for a load test"
                    );
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                waited += Duration::from_secs(1);
            }
            other => return other,
        }
    }
}

/// Creates users for one run.
#[derive(Clone)]
pub struct Provisioner<'a> {
    pub client: &'a Client,
    pub admin: &'a Session,
    pub clock: &'a dyn TotpClock,
    pub prefix: &'a str,
}

impl Provisioner<'_> {
    /// A registered patient with MFA and an AAL2 session.
    pub async fn patient(&self, index: usize) -> Result<Account, SdkError> {
        let username = format!("{}-patient-{index}", self.prefix);
        let password = strong_password();
        patiently("registering a patient", || {
            self.client
                .register(&username, &password, Role::Patient, "Load Test Patient")
        })
        .await?;
        self.enroll(username, password).await
    }

    /// A registered doctor, approved by the admin with `attributes`, with MFA and AAL2.
    pub async fn doctor(&self, index: usize, attributes: &[&str]) -> Result<Account, SdkError> {
        let username = format!("{}-doctor-{index}", self.prefix);
        let password = strong_password();
        patiently("registering a doctor", || {
            self.client
                .register(&username, &password, Role::Doctor, "Load Test Doctor")
        })
        .await?;
        let attributes: Vec<String> = attributes.iter().map(|attribute| (*attribute).to_owned()).collect();
        self.client.admin_approve(self.admin, &username, &attributes).await?;
        self.enroll(username, password).await
    }

    /// An auditor created by the admin, with MFA and AAL2.
    pub async fn auditor(&self) -> Result<Account, SdkError> {
        let username = format!("{}-auditor", self.prefix);
        let (_, password) = self
            .client
            .admin_create_user(self.admin, &username, Role::Auditor, "Load Test Auditor", &[])
            .await?;
        self.enroll(username, password).await
    }

    /// Logs in with the password (AAL1), enrolls TOTP and confirms it (AAL2).
    async fn enroll(&self, username: String, password: String) -> Result<Account, SdkError> {
        let step = patiently("logging in", || self.client.login(&username, &password)).await?;
        let LoginStep::Done(session) = step else {
            return Err(SdkError::Local(format!(
                "{username}: a new account asked for a second factor"
            )));
        };
        let enrollment = self.client.enroll_totp(&session).await?;
        let totp_secret = data_encoding::BASE32_NOPAD
            .decode(enrollment.secret.as_bytes())
            .map_err(|error| SdkError::Local(format!("the TOTP secret is not base32: {error}")))?;
        // The code of the step that has just ended; if the step turns over between computing and
        // checking, that code is two steps late and refused: try again with the new step.
        let mut attempts = 0;
        let (recovery, upgraded, used) = loop {
            let used = step_of(self.clock.now()).saturating_sub(1);
            let code = totp_code(&totp_secret, used)?;
            match self.client.confirm_totp(&session, &code).await {
                Ok((recovery, upgraded)) => break (recovery, upgraded, used),
                Err(error) if error.code() == Some(tonic::Code::InvalidArgument) && attempts < 2 => attempts += 1,
                Err(error) => return Err(error),
            }
        };
        drop(recovery);
        let session = upgraded
            .ok_or_else(|| SdkError::Local(format!("{username}: confirming TOTP did not give an AAL2 session")))?;
        Ok(Account {
            user_id: session.user_id.clone(),
            username,
            password,
            totp_secret,
            session,
            last_step: Some(used),
        })
    }
}

/// The first administrator's credentials, as `caremesh up` (auth-svc) writes them to
/// `<data dir>/bootstrap-admin.txt`.
#[derive(Clone)]
pub struct BootstrapAdmin {
    pub username: String,
    pub password: String,
    pub totp_secret: Vec<u8>,
}

impl std::fmt::Debug for BootstrapAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapAdmin")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl BootstrapAdmin {
    /// The file in `data_dir`.
    pub fn file(data_dir: &Path) -> std::path::PathBuf {
        auth_svc::bootstrap_file(data_dir)
    }

    /// Parses the file's `username:`, `password:` and `totp_secret:` lines.
    pub fn parse(text: &str) -> Result<Self, String> {
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("{name}: ")))
                .map(|value| value.trim().to_owned())
                .ok_or_else(|| format!("the bootstrap admin file has no {name:?} line"))
        };
        let totp_secret = data_encoding::BASE32_NOPAD
            .decode(field("totp_secret")?.as_bytes())
            .map_err(|error| format!("the bootstrap admin file's TOTP secret is not base32: {error}"))?;
        Ok(Self {
            username: field("username").unwrap_or_else(|_| auth_svc::BOOTSTRAP_USERNAME.to_owned()),
            password: field("password")?,
            totp_secret,
        })
    }

    /// Password, then the current TOTP code. If this step's code was used already (an earlier run
    /// in the same 30 s), waits for the next step once.
    pub async fn login(&self, client: &Client, clock: &dyn TotpClock) -> Result<Session, SdkError> {
        let mut waited = false;
        loop {
            let step = patiently("logging in as the admin", || {
                client.login(&self.username, &self.password)
            })
            .await?;
            let LoginStep::SecondFactor { challenge } = step else {
                return Err(SdkError::Local(
                    "the admin's password step did not ask for a second factor".to_owned(),
                ));
            };
            let now = step_of(clock.now());
            let code = totp_code(&self.totp_secret, now)?;
            match client.complete_login(&challenge, Code::Totp(code)).await {
                Err(error) if error.code() == Some(tonic::Code::InvalidArgument) && !waited => {
                    waited = true;
                    let next = i64::try_from(now + 1).unwrap_or(i64::MAX) * auth_svc::totp::PERIOD_SECONDS;
                    let wait = (next - clock.now().timestamp()).clamp(0, auth_svc::totp::PERIOD_SECONDS);
                    eprintln!(
                        "  the admin's TOTP code for this step was used already ({error}); waiting {wait} s for the next step"
                    );
                    tokio::time::sleep(Duration::from_secs(wait.unsigned_abs() + 1)).await;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bootstrap_file_parses() {
        let text = "# caremesh bootstrap administrator\nusername: admin\npassword: pw one two\n\
                    totp_secret: MFRGGZDFMZTWQ2LK\notpauth_uri: otpauth://x\nrecovery_codes: a b\n";
        let admin = BootstrapAdmin::parse(text).unwrap();
        assert_eq!(admin.username, "admin");
        assert_eq!(admin.password, "pw one two");
        assert_eq!(admin.totp_secret, b"abcdefghij");
        assert!(!format!("{admin:?}").contains("pw one"));
        assert!(
            BootstrapAdmin::parse("username: admin\n")
                .unwrap_err()
                .contains("totp_secret")
        );
    }

    #[test]
    fn prefixes_are_valid_unique_usernames() {
        let (a, b) = (run_prefix(), run_prefix());
        assert_ne!(a, b);
        assert!(a.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit()));
    }
}
