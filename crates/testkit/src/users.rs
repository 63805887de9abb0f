//! Signed-in users for tests, made the way a person would: registered, approved by an admin when
//! their role needs it, TOTP enrolled and confirmed with a real code, holding an AAL2 session.

use caremesh_runtime::clock::Clock;
use caremesh_sdk::auth::{Code, LoginStep, Role, Session};
use chrono::{DateTime, Utc};

use crate::TestMesh;

/// A user a test acts as.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub user_id: String,
    pub username: String,
    pub password: String,
    pub totp_secret: Vec<u8>,
    pub recovery_codes: Vec<String>,
    pub session: Session,
}

/// The TOTP code for `secret` at `at`, as an authenticator app shows it.
pub fn totp_code(secret: &[u8], at: DateTime<Utc>) -> String {
    let step = auth_svc::totp::step_at(at.timestamp());
    let code = auth_svc::totp::code_at_step(secret, step, auth_svc::totp::Algorithm::Sha1, auth_svc::totp::DIGITS)
        .expect("TOTP code");
    format!("{code:06}")
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::now_v7().simple().to_string()[20..])
}

/// A passphrase zxcvbn rates strong and that does not contain `username`.
pub fn strong_password() -> String {
    format!(
        "vellum orbit cactus lantern {}",
        &uuid::Uuid::now_v7().simple().to_string()[24..]
    )
}

impl TestMesh {
    /// The bootstrap admin, signed in with its TOTP secret from the bootstrap file.
    pub async fn admin(&self) -> &TestUser {
        self.admin
            .get_or_init(|| async {
                let file =
                    std::fs::read_to_string(auth_svc::bootstrap_file(&self.dir())).expect("bootstrap admin file");
                let field = |name: &str| {
                    file.lines()
                        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
                        .unwrap_or_else(|| panic!("bootstrap file has no {name}"))
                        .to_owned()
                };
                let password = field("password");
                let totp_secret = data_encoding::BASE32_NOPAD
                    .decode(field("totp_secret").as_bytes())
                    .expect("base32");
                let mut admin = TestUser {
                    user_id: String::new(),
                    username: auth_svc::BOOTSTRAP_USERNAME.to_owned(),
                    password,
                    totp_secret,
                    recovery_codes: field("recovery_codes").split(' ').map(str::to_owned).collect(),
                    session: placeholder_session(),
                };
                admin.session = self.login_with_totp(&admin).await;
                admin.user_id = admin.session.user_id.clone();
                admin
            })
            .await
    }

    /// Password then TOTP, with the clock moved to a fresh time step so the code is not a replay.
    pub async fn login_with_totp(&self, user: &TestUser) -> Session {
        self.advance(30);
        let client = self.sdk();
        let LoginStep::SecondFactor { challenge } = client
            .login(&user.username, &user.password)
            .await
            .expect("password step")
        else {
            panic!("{} has MFA enrolled: expected a second-factor challenge", user.username);
        };
        let code = totp_code(&user.totp_secret, self.clock().now());
        client
            .complete_login(&challenge, Code::Totp(code))
            .await
            .expect("second factor")
    }

    /// A registered patient with MFA and an AAL2 session.
    pub async fn patient(&self) -> TestUser {
        let username = unique("patient");
        let password = strong_password();
        self.sdk()
            .register(&username, &password, Role::Patient, "Test Patient")
            .await
            .expect("register patient");
        self.enroll(username, password).await
    }

    /// A doctor or nurse: registered, approved by the admin with `attributes`, MFA, AAL2.
    pub async fn staff(&self, role: Role, attributes: &[&str]) -> TestUser {
        let username = unique(caremesh_sdk::auth::role_name(role));
        let password = strong_password();
        self.sdk()
            .register(&username, &password, role, "Test Clinician")
            .await
            .expect("register staff");
        let attributes: Vec<String> = attributes.iter().map(|attribute| (*attribute).to_owned()).collect();
        let admin = &self.admin().await.session;
        self.sdk()
            .admin_approve(admin, &username, &attributes)
            .await
            .expect("approve");
        self.enroll(username, password).await
    }

    /// An account created by the admin (auditors and admins), with MFA and AAL2.
    pub async fn created(&self, role: Role) -> TestUser {
        let username = unique(caremesh_sdk::auth::role_name(role));
        let admin = &self.admin().await.session;
        let (_, password) = self
            .sdk()
            .admin_create_user(admin, &username, role, "Created User", &[])
            .await
            .expect("create user");
        self.enroll(username, password).await
    }

    /// Logs in with the password (AAL1), enrolls TOTP and confirms it (AAL2).
    async fn enroll(&self, username: String, password: String) -> TestUser {
        let client = self.sdk();
        let LoginStep::Done(session) = client.login(&username, &password).await.expect("login") else {
            panic!("no MFA yet: expected tokens straight away");
        };
        let enrollment = client.enroll_totp(&session).await.expect("enroll");
        let totp_secret = data_encoding::BASE32_NOPAD
            .decode(enrollment.secret.as_bytes())
            .expect("base32 secret");
        let code = totp_code(&totp_secret, self.clock().now());
        let (recovery_codes, upgraded) = client.confirm_totp(&session, &code).await.expect("confirm");
        let session = upgraded.expect("an active account gets an AAL2 session");
        TestUser {
            user_id: session.user_id.clone(),
            username,
            password,
            totp_secret,
            recovery_codes,
            session,
        }
    }
}

fn placeholder_session() -> Session {
    Session {
        user_id: String::new(),
        role: String::new(),
        session_id: String::new(),
        aal: 0,
        access_token: String::new(),
        access_expires_at: DateTime::<Utc>::MIN_UTC,
        refresh_token: String::new(),
        session_expires_at: DateTime::<Utc>::MIN_UTC,
    }
}
