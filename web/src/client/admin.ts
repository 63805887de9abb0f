// The admin client (AuthAdminService, as `carectl admin` and crates/sdk/src/auth.rs use it):
// pending approvals, one account's state and attributes, disable / enable, unlock, ending
// sessions and resetting MFA, and the roles' sign-in policies (passkeys required). Plain values out; every mutation sends the etag of the account as
// the screen last saw it, so a change made meanwhile by someone else fails (ABORTED) instead of
// being overwritten.

import { createClient, type Client } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";

import { AuthAdminService, type RolePolicy } from "../gen/caremesh/auth/v1/auth_admin_pb";
import { Role, UserStatus, type User } from "../gen/caremesh/auth/v1/user_pb";
import { roleName, type RoleName, type SessionStore } from "./session";
import { createTransport } from "./transport";

export type AccountStatus = "active" | "pending" | "disabled" | "unknown";

/** An account as an administrator sees it. */
export interface AdminUserView {
  readonly userId: string;
  readonly username: string;
  readonly displayName: string;
  readonly role: RoleName;
  readonly status: AccountStatus;
  /** Attributes an admin assigned (editable). */
  readonly attributes: readonly string[];
  /** Attributes auth-svc derives (`role:`, `patient:`), not editable. */
  readonly derivedAttributes: readonly string[];
  readonly mfaEnrolled: boolean;
  readonly locked: boolean;
  readonly failedLoginAttempts: number;
  readonly created: Date | null;
  readonly updated: Date | null;
  readonly approved: Date | null;
  /** The state the view was made from (sent back with every change). */
  readonly etag: string;
}

export interface UserFilter {
  readonly status?: AccountStatus;
  readonly role?: RoleName;
  readonly locked?: boolean;
  readonly usernamePrefix?: string;
  readonly pageToken?: string;
  readonly pageSize?: number;
}

const STATUS: Record<AccountStatus, UserStatus> = {
  active: UserStatus.ACTIVE,
  pending: UserStatus.PENDING,
  disabled: UserStatus.DISABLED,
  unknown: UserStatus.UNSPECIFIED,
};

const ROLE: Record<RoleName, Role> = {
  patient: Role.PATIENT,
  doctor: Role.DOCTOR,
  nurse: Role.NURSE,
  admin: Role.ADMIN,
  auditor: Role.AUDITOR,
  unknown: Role.UNSPECIFIED,
};

function statusOf(status: UserStatus): AccountStatus {
  const found = (Object.keys(STATUS) as AccountStatus[]).find((name) => STATUS[name] === status);
  return found ?? "unknown";
}

function view(user: User | undefined): AdminUserView {
  if (!user) throw new Error("auth-svc answered without the account");
  return {
    userId: user.userId,
    username: user.username,
    displayName: user.displayName,
    role: roleName(user.role),
    status: statusOf(user.status),
    attributes: [...user.attributes],
    derivedAttributes: [...user.derivedAttributes],
    mfaEnrolled: user.mfaEnrolled,
    locked: user.locked,
    failedLoginAttempts: user.failedLoginAttempts,
    created: user.createTime ? timestampDate(user.createTime) : null,
    updated: user.updateTime ? timestampDate(user.updateTime) : null,
    approved: user.approveTime ? timestampDate(user.approveTime) : null,
    etag: user.etag,
  };
}

/** A role's sign-in policy. */
export interface RolePolicyView {
  readonly role: RoleName;
  /** Users of the role sign in with a passkey (or a recovery code) as their second factor. */
  readonly passkeyRequired: boolean;
  /** When an admin last changed it (null: never, the default applies). */
  readonly updated: Date | null;
}

function policyView(policy: RolePolicy | undefined): RolePolicyView {
  if (!policy) throw new Error("auth-svc answered without the policy");
  return {
    role: roleName(policy.role),
    passkeyRequired: policy.passkeyRequired,
    updated: policy.updateTime ? timestampDate(policy.updateTime) : null,
  };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Splits what an admin typed (commas, spaces or new lines) into attributes, without repeats. */
export function parseAttributes(text: string): string[] {
  return [...new Set(text.split(/[\s,]+/).map((a) => a.trim()).filter((a) => a !== ""))];
}

export class AdminClient {
  private readonly admin: Client<typeof AuthAdminService>;

  constructor(baseUrl: string, session: SessionStore) {
    this.admin = createClient(AuthAdminService, createTransport(baseUrl, () => session.accessToken()));
  }

  async listUsers(filter: UserFilter = {}): Promise<{ users: AdminUserView[]; nextPageToken: string }> {
    const response = await this.admin.listUsers({
      pageSize: filter.pageSize ?? 50,
      pageToken: filter.pageToken ?? "",
      status: STATUS[filter.status ?? "unknown"],
      role: ROLE[filter.role ?? "unknown"],
      locked: filter.locked,
      usernamePrefix: filter.usernamePrefix?.trim() ?? "",
    });
    return { users: response.users.map(view), nextPageToken: response.nextPageToken };
  }

  /** The doctors and nurses waiting for approval (`carectl admin pending`), oldest first. */
  async pending(pageToken = ""): Promise<{ users: AdminUserView[]; nextPageToken: string }> {
    return this.listUsers({ status: "pending", pageToken });
  }

  /** One account by username or user id. */
  async getUser(usernameOrId: string): Promise<AdminUserView> {
    const text = usernameOrId.trim();
    const lookup = UUID.test(text) ? { case: "userId" as const, value: text } : { case: "username" as const, value: text.toLowerCase() };
    return view((await this.admin.getUser({ lookup })).user);
  }

  /** Approves a pending doctor or nurse with their attributes; the account becomes active. */
  async approve(user: AdminUserView, attributes: readonly string[]): Promise<AdminUserView> {
    return view((await this.admin.approveUser({ userId: user.userId, attributes: [...attributes], etag: user.etag })).user);
  }

  /** Replaces the assigned attributes (the derived ones stay). */
  async updateAttributes(user: AdminUserView, attributes: readonly string[]): Promise<AdminUserView> {
    return view(
      (await this.admin.updateUserAttributes({ userId: user.userId, attributes: [...attributes], etag: user.etag })).user,
    );
  }

  /** Disables the account: sign-in refused, every session ended. `reason` is a code for the audit log. */
  async disable(user: AdminUserView, reason: string): Promise<AdminUserView> {
    return view((await this.admin.disableUser({ userId: user.userId, reason: reason.trim(), etag: user.etag })).user);
  }

  async enable(user: AdminUserView): Promise<AdminUserView> {
    return view((await this.admin.enableUser({ userId: user.userId, etag: user.etag })).user);
  }

  /** Unlocks an account locked after failed sign-ins and resets its failure counter. */
  async unlock(user: AdminUserView): Promise<AdminUserView> {
    return view((await this.admin.unlockUser({ userId: user.userId, etag: user.etag })).user);
  }

  /** Ends every session of the user; returns how many. Access tokens already issued run out within 10 minutes. */
  async revokeSessions(user: AdminUserView): Promise<number> {
    return (await this.admin.revokeUserSessions({ userId: user.userId })).revokedSessions;
  }

  /** Every role's sign-in policy, in the order of the Role enum. */
  async rolePolicies(): Promise<RolePolicyView[]> {
    return (await this.admin.getRolePolicies({})).policies.map(policyView);
  }

  /** Requires passkeys of a role, or stops requiring them. */
  async setRolePolicy(role: RoleName, passkeyRequired: boolean): Promise<RolePolicyView> {
    return policyView((await this.admin.setRolePolicy({ role: ROLE[role], passkeyRequired })).policy);
  }

  /** Removes the user's authenticator, passkeys and recovery codes (and ends their sessions). */
  async resetMfa(user: AdminUserView): Promise<AdminUserView> {
    return view((await this.admin.resetUserMfa({ userId: user.userId, etag: user.etag })).user);
  }
}
