// Starts Swagger UI on /docs (swagger-ui-dist, served by rawexport itself) over the plain
// list of routes, which stays when the bundle is not installed. The OpenAPI document's URL
// is the container's data-spec.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  if (!root || !window.SwaggerUIBundle) return;
  window.SwaggerUIBundle({
    url: root.getAttribute("data-spec"),
    dom_id: "#swagger-ui",
    validatorUrl: null, // no badge fetched from swagger.io
  });
});
