"""What a handler author touches: ``@handler`` and the registry (``registry``),
binding params to a signature (``params``), the built-in ``rpc.*`` methods
(``builtins``) and running one call into a reply or an error (``dispatch``)."""
