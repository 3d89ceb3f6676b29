// Errors as the SDK reports them, and the French a page shows for each stable code.
import { RETRYABLE_CODES, type ErrorCode } from "./protocol.js";

/** Codes the SDK adds to the server's: the connection dropped before an answer came to a
 * command that is not safe to repeat, or the client was stopped. */
export type ClientErrorCode = ErrorCode | "disconnected" | "stopped";

/** A refused command: the server's stable `code`, its plain `message`, and for codes that
 * say so, when to retry. */
export class PreauError extends Error {
  readonly code: ClientErrorCode;
  readonly retryAfterMs: number | undefined;

  constructor(code: ClientErrorCode, message: string, retryAfterMs?: number) {
    super(message);
    this.name = "PreauError";
    this.code = code;
    this.retryAfterMs = retryAfterMs;
  }

  /** Whether the same command may succeed later unchanged (the outbox retries those). */
  get retryable(): boolean {
    return RETRYABLE.has(this.code);
  }
}

const RETRYABLE = new Set<ClientErrorCode>(RETRYABLE_CODES);

/** Whether a server code is retried as it is. */
export function retryable(code: ClientErrorCode): boolean {
  return RETRYABLE.has(code);
}

const FR: Record<ClientErrorCode, string> = {
  bad_frame: "Le message n'a pas pu être lu par le serveur.",
  unknown_command: "Cette action n'est pas connue du serveur.",
  bad_request: "La demande est incomplète ou incorrecte.",
  too_large: "Le message est trop long.",
  unauthorized: "Votre session a expiré : reconnectez-vous.",
  forbidden: "Les règles de l'établissement ne permettent pas cette action.",
  not_found: "Ce message ou cette discussion n'existe plus.",
  locked: "Cette discussion est verrouillée.",
  muted: "Un enseignant vous a temporairement retiré la parole dans ce forum.",
  rate_limited: "Trop de messages à la suite : patientez un instant.",
  group_full: "Le groupe a atteint le nombre maximal de membres.",
  unavailable: "Le service est momentanément indisponible : nouvel essai automatique.",
  internal: "Une erreur du serveur est survenue : nouvel essai automatique.",
  suspended: "La messagerie est suspendue pour le moment. La lecture reste possible.",
  held: "Votre compte est bloqué quelques minutes : trop de conversations ouvertes d'un coup.",
  outside_hours: "En dehors des horaires d'échanges de l'établissement.",
  overloaded: "Le serveur est très sollicité : nouvel essai automatique.",
  disconnected: "La connexion a été perdue avant la réponse du serveur.",
  stopped: "La messagerie est déconnectée.",
};

/** The French sentence a page shows for a code (a generic one for a code it does not
 * know, so a newer server never leaves a page speechless). */
export function frenchMessage(code: string): string {
  return (FR as Record<string, string>)[code] ?? "Une erreur est survenue.";
}
