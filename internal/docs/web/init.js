// Starts Swagger UI on the page served at /docs. It lives in its own file,
// not inline, so that the page's Content-Security-Policy can be script-src 'self'.
(function () {
  "use strict";
  // Relative to the page (/docs), so the page also works behind a path prefix.
  var spec = new URL("openapi.yaml", document.baseURI).href;
  var ui = window.SwaggerUIBundle({
    url: spec,
    dom_id: "#swagger-ui",
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    displayOperationId: true,
    displayRequestDuration: true,
    docExpansion: "list",
    defaultModelsExpandDepth: 0,
    filter: true,
    // Never ask validator.swagger.io about the spec: the page talks to its own origin only.
    validatorUrl: null,
    // Do not keep the Basic auth credentials typed into "Authorize" across reloads.
    persistAuthorization: false,
    onComplete: function () {
      var title = ui.specSelectors.info().get("title");
      if (title) {
        document.title = title + " \u2013 API reference";
      }
    }
  });
  window.ui = ui;
})();
