// Errors as the UI shows them: the server's own message (the gRPC status message, exactly as the
// service wrote it) and what the user can do about it.

import { Code, ConnectError } from "@connectrpc/connect";

import { PasskeyError } from "./passkeys";

export interface ErrorView {
  /** The server's message (or a description of a network failure). */
  readonly message: string;
  /** What to do next, in plain words. */
  readonly advice: string;
  /** The gRPC status code name, e.g. "Unauthenticated" (for tests and support). */
  readonly code: string;
}

/** What the caller was doing, for advice that fits. */
export type Operation = "register" | "signIn" | "secondFactor" | "enrol" | "confirm" | "session" | "signOut" | "passkey";

const ADVICE: Partial<Record<Code, string>> = {
  [Code.InvalidArgument]: "Check what you typed and try again.",
  [Code.AlreadyExists]: "Choose another username, or sign in if this account is yours.",
  [Code.Unauthenticated]: "Check your details and try again.",
  [Code.PermissionDenied]: "Your account may not do this. Ask an administrator if you think it should.",
  [Code.ResourceExhausted]: "Too many attempts. Wait a minute, then try again.",
  [Code.FailedPrecondition]: "This step is not possible right now. Start again from sign-in.",
  [Code.NotFound]: "It does not exist (any more). Start again.",
  [Code.DeadlineExceeded]: "The server took too long. Try again.",
  [Code.Unavailable]: "The server cannot be reached. Check your connection and that caremesh is running, then try again.",
  [Code.Internal]: "Something went wrong on the server. Try again later.",
};

const OPERATION_ADVICE: Partial<Record<Operation, Partial<Record<Code, string>>>> = {
  signIn: { [Code.Unauthenticated]: "Check your username and password, then try again." },
  secondFactor: {
    [Code.Unauthenticated]: "Enter the current 6-digit code from your authenticator app, or one unused recovery code.",
    [Code.FailedPrecondition]: "The sign-in took too long. Start again with your password.",
  },
  confirm: { [Code.InvalidArgument]: "Enter the current 6-digit code your authenticator app shows for caremesh." },
  session: { [Code.Unauthenticated]: "Your session has ended. Sign in again." },
  passkey: {
    [Code.Unauthenticated]: "This passkey was not accepted. Use another passkey of your account, or sign in with your password.",
    [Code.PermissionDenied]: "This needs two-step sign-in in this session (AAL2): sign out, then sign in with your password and second factor.",
    [Code.FailedPrecondition]: "Do what the message says, then try again.",
    [Code.AlreadyExists]: "This authenticator already holds a passkey of your account: use another one, or keep the one you have.",
  },
};

export function describeError(error: unknown, operation: Operation): ErrorView {
  // The browser ended a passkey ceremony (cancelled, refused): its own words, not a status code.
  if (error instanceof PasskeyError) return { message: error.message, advice: error.advice, code: error.code };
  const connect = ConnectError.from(error);
  const code = connect.code;
  const message = connect.rawMessage !== "" ? connect.rawMessage : Code[code];
  const advice =
    OPERATION_ADVICE[operation]?.[code] ?? ADVICE[code] ?? "Try again. If it keeps failing, contact support.";
  return { message, advice, code: Code[code] };
}
