// The setting add form: choosing a value type swaps in the value widget for it
// (checkbox, number, text), rendered by the server for that type, and carries
// over what was typed so far. The JSON Schema box shows for json values only.
(function () {
  "use strict";
  var select = document.getElementById("id_value_type");
  var form = select && select.form;
  if (!form) {
    return;
  }
  // The text typed last, kept across widgets that cannot hold it (a number
  // box clears "abc"), so going back to a text type brings it back.
  var typed = "";

  function valueInput() {
    return form.elements.namedItem("value");
  }

  function textOf(input) {
    if (!input) {
      return "";
    }
    return input.type === "checkbox" ? (input.checked ? "true" : "false") : input.value;
  }

  function remember() {
    typed = textOf(valueInput());
  }

  function carry(input, text) {
    if (!input) {
      return;
    }
    if (input.type === "checkbox") {
      input.checked = /^\s*(true|on|1|yes)\s*$/i.test(text);
    } else {
      input.value = text;  // a number box takes only a number and stays empty otherwise
    }
  }

  function showSchema() {
    var box = form.elements.namedItem("json_schema");
    var row = box && box.closest(".form-row");
    if (!row) {
      return;
    }
    var json = select.value === "json";
    row.hidden = !json;
    box.disabled = !json;  // a hidden schema is not posted, so it cannot fail the form
  }

  function reloadFor(type) {
    // The old way, when the row cannot be fetched: reload with the type, key and description.
    var params = new URLSearchParams(window.location.search);
    params.set("value_type", type);
    ["key", "description"].forEach(function (name) {
      var field = form.elements.namedItem(name);
      if (field && field.value) {
        params.set(name, field.value);
      }
    });
    window.location.search = params.toString();
  }

  form.addEventListener("input", function (event) {
    if (event.target === valueInput()) {
      remember();
    }
  });
  form.addEventListener("change", function (event) {
    if (event.target === valueInput()) {
      remember();
    }
  });

  select.addEventListener("change", function () {
    var type = select.value;
    var row = valueInput() && valueInput().closest(".form-row");
    showSchema();
    if (!row) {
      return;
    }
    var url = new URL(window.location.href);
    url.search = "";
    url.searchParams.set("value_type", type);
    fetch(url, { credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var page = new DOMParser().parseFromString(html, "text/html");
        var fresh = page.querySelector(".form-row.field-value");
        if (!fresh || select.value !== type) {
          if (!fresh) {
            throw new Error("no value row");
          }
          return;  // another type was chosen meanwhile; its own fetch swaps the row
        }
        var current = valueInput().closest(".form-row");
        current.replaceWith(document.importNode(fresh, true));
        carry(valueInput(), typed);
        form.dataset.valueType = type;
      })
      .catch(function () {
        reloadFor(type);
      });
  });

  remember();
  showSchema();
})();
