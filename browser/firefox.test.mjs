import { defineSuite } from "./suite.mjs";

defineSuite("firefox");
