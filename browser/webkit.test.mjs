import { defineSuite } from "./suite.mjs";

defineSuite("webkit");
