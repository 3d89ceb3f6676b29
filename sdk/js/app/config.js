// Préau messaging: this file tells the app where the gateway is and how to get a token.
// In development mode (served by the gateway at /) it stays empty: the app offers the demo
// school's users. An ENT hosting the built files sets, for example:
//
// window.PREAU = {
//   gateway: "wss://messagerie.ent.example.fr/ws",
//   http: "https://messagerie.ent.example.fr",
//   token: async () => (await fetch("/ent/jeton-preau", { credentials: "include" })).text(),
//   directory: async () => (await fetch("/ent/annuaire-preau", { credentials: "include" })).json(),
// };
