//! Device commands: `device list | link | approve | remove | new-identity`. Each profile is one
//! device of its user; a second profile of the same user joins by linking (protocol v2 §8).

use caremesh_sdk::SdkError;
use caremesh_sdk::messaging::Messenger;
use clap::Subcommand;
use serde_json::json;

use crate::Ctx;
use crate::messaging::messenger;

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Your devices, this one marked.
    List,
    /// Make this profile a new device of your account: shows a code and a QR code, then waits
    /// (up to 10 minutes) until you approve it on one of your devices with `device approve`.
    Link {
        /// Do not draw the QR code.
        #[arg(long)]
        no_qr: bool,
    },
    /// Approve a new device after comparing the code it shows (XXXX-XXXX-XXXX-XXXX).
    Approve { code: String },
    /// Remove one of your other devices: it receives nothing sent from now on.
    Remove { device_id: String },
    /// Start over with a new account identity on this profile (all devices lost, say). Your
    /// contacts are warned that your identity key changed; your other devices stop working.
    NewIdentity,
}

pub async fn device(ctx: &Ctx, command: DeviceCommand) -> Result<(), SdkError> {
    let session = ctx.session().await?;
    match command {
        DeviceCommand::Link { no_qr } => {
            let json = ctx.json;
            let messenger = Messenger::link(
                ctx.client.clone(),
                ctx.store.dir(),
                &ctx.profile,
                &session,
                |code, qr| {
                    if json {
                        println!("{}", json!({ "code": code, "qr": qr }));
                        return;
                    }
                    let mut text = format!(
                        "On one of your devices, run `carectl device approve {code}` after checking that it shows \
                     this code:\n\n    {code}\n"
                    );
                    if !no_qr && let Ok(qr) = qrcode::QrCode::new(qr.as_bytes()) {
                        text.push('\n');
                        text.push_str(
                            &qr.render::<qrcode::render::unicode::Dense1x2>()
                                .dark_color(qrcode::render::unicode::Dense1x2::Light)
                                .light_color(qrcode::render::unicode::Dense1x2::Dark)
                                .build(),
                        );
                        text.push('\n');
                    }
                    text.push_str("Waiting for approval...");
                    println!("{text}");
                },
            )
            .await?;
            let device_id = messenger.device_id()?;
            ctx.print(json!({ "device_id": device_id, "linked": true }), || {
                format!("linked: this profile is device {device_id}")
            });
        }
        DeviceCommand::NewIdentity => {
            let messenger = Messenger::open(ctx.client.clone(), ctx.store.dir(), &ctx.profile, &session).await?;
            let device_id = messenger.device_id()?;
            ctx.print(json!({ "device_id": device_id }), || {
                format!("a new identity on device {device_id}")
            });
        }
        DeviceCommand::List => {
            let messenger = messenger(ctx, &session).await?;
            let devices = messenger.devices(&session).await?;
            ctx.print(
                json!(
                    devices
                        .iter()
                        .map(|d| json!({
                            "device_id": d.device_id,
                            "this_device": d.this_device,
                            "admin_removed": d.admin_removed,
                        }))
                        .collect::<Vec<_>>()
                ),
                || {
                    devices
                        .iter()
                        .map(|d| {
                            let mut line = d.device_id.clone();
                            if d.this_device {
                                line.push_str("  (this device)");
                            }
                            if d.admin_removed {
                                line.push_str("  (removed by an admin)");
                            }
                            line
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            );
        }
        DeviceCommand::Approve { code } => {
            let messenger = messenger(ctx, &session).await?;
            let device_id = messenger.approve_link(&session, &code).await?;
            ctx.print(json!({ "device_id": device_id, "approved": true }), || {
                format!("approved device {device_id}")
            });
        }
        DeviceCommand::Remove { device_id } => {
            let messenger = messenger(ctx, &session).await?;
            messenger.remove_device(&session, &device_id).await?;
            ctx.print(json!({ "device_id": device_id, "removed": true }), || {
                format!("removed device {device_id}; your history key was rotated")
            });
        }
    }
    Ok(())
}
