// Join tokens (docs/operations.md, "On the internet"): when the server wants them, the page's
// token goes with its socket and its ICE request; when it has expired (or the page's address
// carries none) and the operator set JOIN_TOKEN_URL, the page asks that URL of the operator's
// backend for a fresh one, with the site's cookies.

// The seconds before `exp` at which a token counts as expired already (a reconnection made
// with it would race its end).
const MARGIN_S = 5;

// The claims of a JWT, read without checking it (the server checks): for `exp` only.
export function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = part + "=".repeat((4 - (part.length % 4)) % 4);
    const claims = JSON.parse(atob(padded));
    return claims && typeof claims === "object" ? claims : {};
  } catch {
    return {};
  }
}

export class JoinToken {
  // config: the page's config ("joinToken" is there only when the server wants tokens);
  // scope(): the form fields the backend mints for: {id, peer_id} or {id, room}.
  constructor(config, scope) {
    this.required = "joinToken" in config;
    this.token = config.joinToken || "";
    this.renewUrl = config.joinTokenUrl || "";
    this.scope = scope;
    this.problem = ""; // why the last renewal failed, in words
  }

  get canRenew() {
    return this.required && Boolean(this.renewUrl);
  }

  // Whether the token has expired (or will within a few seconds); false when it says no exp.
  get expired() {
    const exp = Number(tokenClaims(this.token).exp);
    return Number.isFinite(exp) && exp - MARGIN_S <= Date.now() / 1000;
  }

  // `path` with the token in its query (as is when the server wants none).
  withToken(path) {
    if (!this.required || !this.token) return path;
    const url = new URL(path, location.href);
    url.searchParams.set("token", this.token);
    return url.pathname + url.search;
  }

  // What the ICE endpoint gets: the join token, in place of the page's ICE token.
  iceBody(icePass) {
    return this.required ? this.token : icePass;
  }

  // At start: a page opened without a token, or with one expired meanwhile, asks for one.
  async ready() {
    if (this.canRenew && (!this.token || this.expired)) await this.renew();
  }

  // Ask JOIN_TOKEN_URL for a fresh token; answers whether it got one.
  async renew() {
    this.problem = "";
    try {
      const fields = Object.entries(this.scope()).filter(([, value]) => value);
      const response = await fetch(this.renewUrl, {
        method: "POST",
        credentials: "include",
        cache: "no-store",
        body: new URLSearchParams(fields),
      });
      if (!response.ok) {
        this.problem = `the site answered ${response.status} when asked for a new one`;
        return false;
      }
      const text = (await response.text()).trim();
      let token = text;
      if (text.startsWith("{")) token = String(JSON.parse(text).token || "");
      if (!token || token.split(".").length !== 3) {
        this.problem = "the site's answer held no token";
        return false;
      }
      this.token = token;
      return true;
    } catch (error) {
      console.warn("join token renewal failed:", error);
      this.problem = "the site could not be asked for a new one";
      return false;
    }
  }
}
